// Package hydra holds the end-to-end tests that run the authproxy binary
// against ORY Hydra v2.3.0, a real OAuth2 authorization server.
//
// Each test starts Hydra on loopback with internal/hydratest, registers its
// own clients, and runs the sidecar binary as a subprocess in front of an
// upstream that accepts only tokens Hydra reports as active. The tests need
// the Hydra binary that scripts/hydra-build.sh builds. Without it they fail
// with a message naming that script, or skip when AUTHPROXY_SKIP_HYDRA=1.
//
// Run them with:
//
//	go test -count=1 ./e2e/hydra
package hydra
