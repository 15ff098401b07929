// Package metrics serves what an operator watches of a running agent:
// Prometheus metrics on /metrics, liveness on /healthz, readiness on
// /readyz and a JSON snapshot of the slots on /status.
//
// It is a package of its own, not part of poll, so that poll stays free of
// Prometheus and HTTP serving: poll reports events through its small
// poll.Observer interface and snapshots through Agent.Status, builder and
// oci code report image work through the hooks here (ImagePrepared,
// OCIProgress, WithImages), and the CLI wires them together. Metrics are
// registered in a private registry, never the global one.
package metrics
