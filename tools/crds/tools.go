//go:build tools

// Package crds pins the Go API types that scripts/gen_crds.py turns into
// CustomResourceDefinitions with controller-gen. Nothing here is built.
package crds

import (
	_ "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	_ "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	_ "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1"
	_ "github.com/dapr/dapr/pkg/apis/resiliency/v1alpha1"
	_ "github.com/dapr/dapr/pkg/apis/subscriptions/v1alpha1"
	_ "github.com/dapr/dapr/pkg/apis/subscriptions/v2alpha1"
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)
