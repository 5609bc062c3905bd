// Command daprd is Dapr's sidecar (github.com/dapr/dapr/cmd/daprd) carrying only the
// components listed in components.go.
//
// Upstream's main is app.Run from cmd/daprd/app, and that package imports
// cmd/daprd/components, which registers every component (~130, build tag allcomponents
// or stablecomponents) and panics when built with neither tag; `go build -overlay`
// cannot swap it either, since Go refuses overlays on files in the module cache. So this
// main starts the runtime the way app.Run does, with upstream's flags (cmd/daprd/options),
// security and runtime packages; only the component registrations are ours.
package main

import (
	"context"
	"fmt"
	"os"
	"reflect"

	"github.com/dapr/dapr/cmd/daprd/options"
	"github.com/dapr/dapr/pkg/buildinfo"
	bindingsLoader "github.com/dapr/dapr/pkg/components/bindings"
	configurationLoader "github.com/dapr/dapr/pkg/components/configuration"
	conversationLoader "github.com/dapr/dapr/pkg/components/conversation"
	cryptoLoader "github.com/dapr/dapr/pkg/components/crypto"
	lockLoader "github.com/dapr/dapr/pkg/components/lock"
	httpMiddlewareLoader "github.com/dapr/dapr/pkg/components/middleware/http"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
	"github.com/dapr/dapr/pkg/healthz"
	"github.com/dapr/dapr/pkg/metrics"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/runtime"
	"github.com/dapr/dapr/pkg/runtime/registry"
	"github.com/dapr/dapr/pkg/security"
	"github.com/dapr/kit/concurrency"
	"github.com/dapr/kit/logger"
	"github.com/dapr/kit/signals"
)

var (
	log        = logger.NewLogger("dapr.runtime")
	logContrib = logger.NewLogger("dapr.contrib")
)

func main() {
	opts, err := options.New(os.Args[1:])
	if err != nil {
		log.Fatalf("Failed to parse flags: %v", err)
	}
	switch {
	case opts.RuntimeVersion:
		fmt.Println(buildinfo.Version()) //nolint:forbidigo
		return
	case opts.BuildInfo:
		fmt.Printf("Version: %s\nGit Commit: %s\nGit Version: %s\n", //nolint:forbidigo
			buildinfo.Version(), buildinfo.Commit(), buildinfo.GitVersion())
		return
	case opts.WaitCommand:
		runtime.WaitUntilDaprOutboundReady(opts.DaprHTTPPort)
		return
	}

	opts.Logger.SetAppID(opts.AppID)
	if err := logger.ApplyOptionsToLoggers(&opts.Logger); err != nil {
		log.Fatal(err)
	}
	log.Infof("Starting Dapr Runtime -- version %s -- commit %s", buildinfo.Version(), buildinfo.Commit())
	log.Infof("Log level set to: %s", opts.Logger.OutputLevel)

	cfg := runtimeConfig(opts)
	cfg.Registry = registries()
	cfg.Healthz = healthz.New()
	cfg.Metrics = metrics.Options{
		Enabled:       opts.Metrics.Enabled(),
		Log:           log,
		Port:          opts.Metrics.Port(),
		Namespace:     metrics.DefaultMetricNamespace,
		Healthz:       cfg.Healthz,
		ListenAddress: opts.Metrics.ListenAddress(),
	}

	ctx := signals.Context()
	sec, err := security.New(ctx, security.Options{
		SentryAddress:           opts.SentryAddress,
		ControlPlaneTrustDomain: opts.ControlPlaneTrustDomain,
		ControlPlaneNamespace:   opts.ControlPlaneNamespace,
		TrustAnchors:            opts.TrustAnchors,
		AppID:                   opts.AppID,
		MTLSEnabled:             opts.EnableMTLS,
		Mode:                    modes.DaprMode(opts.Mode),
		Healthz:                 cfg.Healthz,
		JwtAudiences:            opts.SentryRequestJwtAudiences,
	})
	if err != nil {
		log.Fatal(err)
	}

	err = concurrency.NewRunnerManager(
		sec.Run,
		func(ctx context.Context) error {
			handler, err := sec.Handler(ctx)
			if err != nil {
				return err
			}
			cfg.Security = handler
			rt, err := runtime.FromConfig(ctx, cfg)
			if err != nil {
				return err
			}
			return rt.Run(ctx)
		},
	).Run(ctx)
	if err != nil {
		log.Fatalf("Fatal error from runtime: %s", err)
	}
	log.Info("Daprd shutdown gracefully")
}

// registries hands the runtime every component registry, as upstream does; only the
// ones components.go fills have anything in them.
func registries() *registry.Options {
	secretLoader.DefaultRegistry.Logger = logContrib
	stateLoader.DefaultRegistry.Logger = logContrib
	cryptoLoader.DefaultRegistry.Logger = logContrib
	configurationLoader.DefaultRegistry.Logger = logContrib
	lockLoader.DefaultRegistry.Logger = logContrib
	pubsubLoader.DefaultRegistry.Logger = logContrib
	nrLoader.DefaultRegistry.Logger = logContrib
	bindingsLoader.DefaultRegistry.Logger = logContrib
	conversationLoader.DefaultRegistry.Logger = logContrib
	httpMiddlewareLoader.DefaultRegistry.Logger = log
	return registry.NewOptions().
		WithSecretStores(secretLoader.DefaultRegistry).
		WithStateStores(stateLoader.DefaultRegistry).
		WithConfigurations(configurationLoader.DefaultRegistry).
		WithLocks(lockLoader.DefaultRegistry).
		WithPubSubs(pubsubLoader.DefaultRegistry).
		WithNameResolutions(nrLoader.DefaultRegistry).
		WithBindings(bindingsLoader.DefaultRegistry).
		WithCryptoProviders(cryptoLoader.DefaultRegistry).
		WithHTTPMiddlewares(httpMiddlewareLoader.DefaultRegistry).
		WithConversations(conversationLoader.DefaultRegistry)
}

// runtimeConfig copies each parsed option onto the runtime.Config field of the same name
// and type, and sets the two whose names differ by hand. A Config field that neither
// covers stops daprd at start-up with its name, so a Dapr upgrade that adds one is caught
// on the first run instead of its flag being quietly ignored.
func runtimeConfig(opts *options.Options) *runtime.Config {
	cfg := &runtime.Config{
		ApplicationPort:  opts.AppPort,
		SchedulerStreams: opts.SchedulerJobStreams,
	}
	byHand := map[string]bool{
		"ApplicationPort": true, "SchedulerStreams": true,
		"Registry": true, "Healthz": true, "Metrics": true, "Security": true, // set in main
		"WorkflowEventSink": true, // not a daprd option (embedders only)
	}
	from, to := reflect.ValueOf(opts).Elem(), reflect.ValueOf(cfg).Elem()
	for i := range to.NumField() {
		field := to.Type().Field(i)
		if byHand[field.Name] || !field.IsExported() {
			continue
		}
		value := from.FieldByName(field.Name)
		if !value.IsValid() || value.Type() != field.Type {
			log.Fatalf("runtime.Config.%s has no daprd option of that name and type: set it in tools/dapr/daprd/main.go", field.Name)
		}
		to.Field(i).Set(value)
	}
	return cfg
}
