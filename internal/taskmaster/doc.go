// Package taskmaster implements an in-memory imitation of the Taskmaster
// task-management service, for the quickstart and for tests of the
// authenticating proxy.
//
// The server issues OAuth 2.0 access tokens with the client-credentials grant
// (RFC 6749 section 4.4) at POST /api/auth/oauth2/token and serves the
// resource API under /api/tasks and /api/projects to requests that carry
// "Authorization: Bearer <access_token>". It follows the public source of the
// hosted service (github.com/speakeasy-api/taskmaster) in these details:
//
//   - the token endpoint checks the Content-Type first, then grant_type, then
//     the client credentials;
//   - a Basic Authorization header is base64-decoded and split on ":", and it
//     is used only when the split yields exactly two parts, so a secret that
//     contains ":" must be sent as a body parameter;
//   - the resource API reads one Authorization value, requires the exact
//     prefix "Bearer " and exactly one space, and responds with 401 and a JSON
//     "message" otherwise.
//
// The service's published guide and its source disagree on the status for a
// wrong client id or secret, so [Config.InvalidClientStatus] selects 400 (the
// source) or 401 (the guide). Error bodies of the token endpoint use the
// RFC 6749 section 5.2 shape that the guide shows, {"error",
// "error_description"}.
//
// NOTE: a token request without client credentials gets 401 invalid_client
// here, as RFC 6749 section 5.2 suggests, but the source at commit 4ab5831
// (src/lib/oidc-provider/handlers/token/client-credentials.ts) returns 400.
//
// Every [Server] is safe for concurrent use. Its knobs (latency, injected
// failures, rate limiting, revocation, token lifetime) and its records of
// recent requests let tests change and inspect the server while requests are
// in flight. With [Config.EnableControl] set, the same knobs are reachable over
// HTTP under /_control/, so a separate process can drive them.
//
// All clients share one store of projects and tasks. The hosted service keeps
// each user's data apart, which this imitation does not do.
package taskmaster
