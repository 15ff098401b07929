package vieterserver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// The server answers as Vieter 0.6.0's web framework does, byte for byte
// where it matters to a client:
//
//   - every answer carries "Connection: close" and the connection is
//     closed after it;
//   - JSON answers and status-only answers have no Content-Length and no
//     chunking: the body ends when the connection closes;
//   - status-only answers (the success of POST /api/v1/jobs/queue, most
//     411/404/500s of handlers) have an empty body;
//   - the canned 401, 404 and 500 are text/plain with a Content-Length;
//   - files of the repository are served with a Content-Length.
//
// Handlers write into a recorder; route then writes the answer on the
// hijacked connection, which also lets fault injection cut it anywhere.

// recorder is the http.ResponseWriter handlers write to.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *recorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// canned returns one of the framework's canned text answers.
func canned(code int) *recorder {
	r := newRecorder()
	text := fmt.Sprintf("%d %s", code, http.StatusText(code))
	r.header.Set("Content-Type", "text/plain")
	r.header.Set("Content-Length", strconv.Itoa(len(text)))
	r.status = code
	r.body.WriteString(text)
	return r
}

// drain reads what is left of the request body (bounded), as the real
// server reads a whole request before it answers.
func drain(r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxPackageSize+1))
}

// head returns the status line and headers of an answer. A body without a
// Content-Length set by the handler gets none: it ends at the close.
func (a *recorder) head() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", a.code(), http.StatusText(a.code()))
	a.header.Set("Connection", "close")
	a.header.Del("Transfer-Encoding")
	keys := make([]string, 0, len(a.header))
	for k := range a.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range a.header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, strings.NewReplacer("\r", "", "\n", "").Replace(v))
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// writeRaw writes the answer a on w's hijacked connection and closes it.
// cut ≥ 0 stops after that many bytes of the body (a connection dropped
// mid-answer); cut < 0 writes it whole. It reports whether the answer
// went out raw.
func writeRaw(w http.ResponseWriter, r *http.Request, a *recorder, cut int) bool {
	conn, bufrw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	writeAnswer(bufrw.Writer, r, a, cut)
	return true
}

func writeAnswer(bw *bufio.Writer, r *http.Request, a *recorder, cut int) {
	_, _ = bw.Write(a.head())
	if r.Method != http.MethodHead {
		body := a.body.Bytes()
		if cut >= 0 && cut < len(body) {
			body = body[:cut]
		}
		_, _ = bw.Write(body)
	}
	_ = bw.Flush()
}

// writeFallback writes a through w when the connection cannot be hijacked
// (HTTP/2): the framing then is net/http's.
func writeFallback(w http.ResponseWriter, r *http.Request, a *recorder) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.WriteHeader(a.code())
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body.Bytes())
	}
}
