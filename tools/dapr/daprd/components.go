package main

import (
	nrKubernetes "github.com/dapr/components-contrib/nameresolution/kubernetes"
	nrMDNS "github.com/dapr/components-contrib/nameresolution/mdns"
	nrSQLite "github.com/dapr/components-contrib/nameresolution/sqlite"
	pubsubKafka "github.com/dapr/components-contrib/pubsub/kafka"
	pubsubRedis "github.com/dapr/components-contrib/pubsub/redis"
	secretKubernetes "github.com/dapr/components-contrib/secretstores/kubernetes"
	secretFile "github.com/dapr/components-contrib/secretstores/local/file"
	statePostgresV2 "github.com/dapr/components-contrib/state/postgresql/v2"
	"github.com/dapr/dapr/pkg/components"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

// The components this daprd carries: the ones charts/ and the local runs use, nothing
// else. Add one here (and to the project's resources) when a service needs it.
func init() {
	// pubsub.kafka: Redpanda (SASL/SCRAM over TLS) in the clusters.
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubKafka.NewKafka, "kafka")
	// pubsub.redis: Redis Streams, for a light process-mode run.
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubRedis.NewRedisStreams, "redis")

	// state.postgresql v2 only: a resource that asks for v1 fails to load rather than
	// silently getting v1's table layout.
	stateLoader.DefaultRegistry.RegisterComponentWithVersions("postgresql", components.Versioning{
		Preferred: components.VersionConstructor{Version: "v2", Constructor: statePostgresV2.NewPostgreSQLStateStore},
		Default:   "v2",
	})

	secretLoader.DefaultRegistry.RegisterComponent(secretFile.NewLocalSecretStore, "local.file")
	// Also the built-in "kubernetes" store daprd adds by itself in Kubernetes mode.
	secretLoader.DefaultRegistry.RegisterComponent(secretKubernetes.NewKubernetesSecretStore, "kubernetes")

	// The name resolvers: mdns and kubernetes, the defaults when no Configuration names one
	// (self-hosted mode, a cluster); sqlite for the process-mode runs (testkit/dapr.py), where
	// mdns would find every daprd on the machine by app id, another run's "api" included.
	// The web invokes the api through its sidecar.
	nrLoader.DefaultRegistry.RegisterComponent(nrMDNS.NewResolver, "mdns")
	nrLoader.DefaultRegistry.RegisterComponent(nrKubernetes.NewResolver, "kubernetes")
	nrLoader.DefaultRegistry.RegisterComponent(nrSQLite.NewResolver, "sqlite")
}
