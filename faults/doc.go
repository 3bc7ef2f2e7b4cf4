// Package faults holds the sidecar's fault suite: tests that break the
// token endpoint, the upstream, the client and the process in the ways
// production breaks them, over real loopback connections, and check the
// exact outcome of each. The package has no code outside its tests.
package faults
