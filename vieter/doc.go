// Package vieter is vagent's one boundary with a Vieter server (0.6.0): the
// wire types (a job, the parameters of a log upload, the answer to a
// publish) and every call an agent makes — poll, upload a log, requeue,
// check a package version, check the key, publish — with one error type,
// one classification of failures into transient and permanent, and one
// retry policy (AgentRetry). The agent loop (poll), a job's build (job)
// and `vagent check` use it; nothing else in vagent speaks HTTP to the
// server.
//
// It is a top-level package because its users are: poll has no root and
// no images, job runs containers, and neither may own the other's client.
//
// # Wire facts
//
// Vieter's web framework closes the connection after every answer; JSON
// answers have neither a Content-Length nor chunking, so their body ends
// when the connection closes and a connection cut mid-answer looks like a
// complete, truncated body. A JSON answer that does not parse is therefore
// a transport failure (ErrMalformed, transient), never a success. Answers
// that are a bare status by design (the success of POST /api/v1/jobs/queue,
// most 404/411/500s of handlers) have an empty body; the canned 401, 404
// and 500 are short text/plain bodies. The Error of a non-2xx answer
// carries the status and Vieter's message when the body is a JSON
// envelope, or the body's first bytes otherwise.
//
// # Retries
//
// A Client makes one attempt per call. Retry repeats a call with jittered
// exponential backoff while IsTransient says a retry may succeed (network
// failures, a cut or malformed answer, 5xx, 408, 429); 401 and 403 wrap
// ErrUnauthorized and are retried only after Retry.Unauthorized.
// AgentRetry is the agent's one policy (unbounded, 1 s to 5 min, a
// rejected key tried again after 5 min); a build, which must end, uses it
// Finite (bounded attempts, a rejected key final).
//
// Two calls are not idempotent on the server and need more than a retry:
//
//   - Requeue: every request that reaches the handler queues one more job,
//     also when its answer is lost. A failure whose request was sent but
//     whose answer was lost (Sent reports it) may have queued the job; see
//     poll's package documentation for how often the agent re-sends.
//   - Publish: a 200 whose body is not the publish envelope naming the
//     package proves nothing (a proxy page, a cut connection).
//     PublishConfirmed then asks the repository (HasVersion) and publishes
//     again when the package is absent; it succeeds only once the server
//     confirmed the package.
//
// # The API key
//
// The key is sent in X-Api-Key on the routes that need it and only to the
// configured server: a redirect of such a request to another host or from
// https to plain http is refused. Repository reads (the version check, the
// database check) carry no key. Error texts never contain the key.
package vieter
