"""docs/cost.md against the repository (rung L0): the generated table is what the chart, the
inventories and the role's price list say now, the steady state fits the minimum nodes with
headroom, production's peak fits the maximum, and a month at the maximum fits the credit."""

from __future__ import annotations

import costlib
import pytest

pytestmark = pytest.mark.unit

CREDIT_USD = 200


@pytest.fixture(scope="module")
def model():
    return costlib.model()


def test_L0_docs_cost_md_is_the_generated_table(model):
    assert costlib.doc_block() == costlib.render(model), (
        "docs/cost.md is stale: run .venv/bin/python tests/cluster/costlib.py --write and review the diff"
    )


def test_L0_steady_state_fits_the_minimum_nodes_with_headroom(model):
    cpu, mem = model.total("steady")
    alloc_cpu, alloc_mem = model.allocatable[model.min_nodes]
    assert cpu <= costlib.STEADY_HEADROOM * alloc_cpu
    assert mem <= costlib.STEADY_HEADROOM * alloc_mem


def test_L0_production_at_its_hpa_maximum_fits_the_maximum_nodes(model):
    cpu, mem = model.total("peak")
    alloc_cpu, alloc_mem = model.allocatable[model.max_nodes]
    assert cpu <= alloc_cpu and mem <= alloc_mem


def test_L0_a_month_at_the_autoscalers_maximum_fits_the_credit(model):
    assert model.monthly(2) <= CREDIT_USD


def test_L0_the_role_budget_guard_leaves_room_for_the_rest(model):
    """roles/cluster refuses pools over cluster_doks_node_budget_usd_month; that budget plus the
    load balancer, volumes and PostgreSQL must stay within the credit, and the chosen pool
    within the budget."""
    rest = sum(item[2] for item in model.money[1:])
    assert model.budget + rest <= CREDIT_USD
    assert model.size["usd_month"] * model.max_nodes <= model.budget


def test_L0_the_platform_counts_its_values_files_and_names_what_it_assumes(model):
    pods, volumes, assumed = costlib.platform_pods()
    files = {p.stem for p in costlib.platform_files()}
    assert {p.name.split(":")[0] for p in pods if "(assumed)" not in p.name and "DOKS" not in p.name} <= files
    assert set(assumed) == set(costlib.ASSUMED) - files
    for name in assumed:
        assert f"| {name}: " in costlib.render(model)
    assert all(gib > 0 for _, gib in volumes)
