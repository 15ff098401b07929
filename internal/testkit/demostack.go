package testkit

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/sirupsen/logrus"
)

// DemoStack is a Stack for trying vagent by hand (make demo-stack): one
// queued job, an agent.yaml and a PKGBUILD to build, and a guide with
// ready-to-paste command lines.
type DemoStack struct {
	*Stack
	// Dir holds the stack, agent.yaml (Config), the PKGBUILD's directory
	// (PkgDir) and the agent's data dir.
	Dir, Vagent, Config, PkgDir string
	// Metrics is the agent's metrics_address; Arch its arch; Target the
	// queued target; YAML the agent.yaml.
	Metrics, Arch, YAML string
	Target              int
}

// StartDemoStack starts a Stack under dir (which must be searchable by
// every user: builds reach their data dir as mapped users) with a target
// queued for x86_64, and writes dir/agent.yaml (data dir dir/data, two
// slots, a poll every 5s, a free metrics address) and dir/hello/PKGBUILD.
// vagent is the binary the guide names.
func StartDemoStack(ctx context.Context, vagent, dir string, log logrus.FieldLogger) (_ *DemoStack, retErr error) {
	st, err := StartStack(ctx, filepath.Join(dir, "stack"), log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			st.Close()
		}
	}()
	d := &DemoStack{Stack: st, Dir: dir, Vagent: vagent, Config: filepath.Join(dir, "agent.yaml"), PkgDir: filepath.Join(dir, "hello"), Arch: "x86_64"}
	if d.Target, err = st.AddURLTarget("hello", "demo", d.Arch, DemoPKGBUILD("vagent-demo-hello", "1.0")); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.Metrics = ln.Addr().String()
	ln.Close()
	d.YAML = st.AgentYAML(filepath.Join(dir, "data"), d.Arch, 2, 5*time.Second) + "metrics_address: " + d.Metrics + "\n"
	if err := os.WriteFile(d.Config, []byte(d.YAML), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.PkgDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d.PkgDir, "PKGBUILD"), []byte(DemoPKGBUILD("vagent-hello", "0.1")), 0o644); err != nil {
		return nil, err
	}
	return d, nil
}

// Key is the stack's API key.
func (d *DemoStack) Key() string { return StackAPIKey }

var guide = template.Must(template.New("guide").Parse(`
The test stack is up until Ctrl-C, which also removes {{.Dir}} and the
agent's data dir in it: stop vagent run first.
  registry        {{.Registry.Host}} (plain HTTP), base image {{.BaseImage}}
  Vieter server   {{.Address}} (api key in agent.yaml), repository deps: base-devel, git
  queued          target {{.Target}} (repository demo) for {{.Arch}}

agent.yaml ({{.Config}}):
{{.YAML}}
Build a PKGBUILD by hand (a sample is in {{.PkgDir}}), with the agent's
configuration, or with flags alone:

  sudo {{.Vagent}} build --config {{.Config}} --base-image {{.BaseImage}} --out {{.Dir}}/out {{.PkgDir}}
  sudo {{.Vagent}} build --data-dir {{.Dir}}/build-data --base-image {{.BaseImage}} --repo-url {{.Address}}/deps --out {{.Dir}}/out {{.PkgDir}}

Run the agent (it builds the queued job, then polls every 5s), and watch it:

  sudo {{.Vagent}} run {{.Config}}
  {{.Vagent}} status --address {{.Metrics}}
  {{.Vagent}} logs -f 0 --address {{.Metrics}}

Check the setup, queue the target again, read the logs the server got:

  sudo {{.Vagent}} check --config {{.Config}} --base-image {{.BaseImage}}
  curl -X POST -H "X-Api-Key: {{.Key}}" '{{.Address}}/api/v1/jobs/queue?target={{.Target}}&arch={{.Arch}}'
  curl -H "X-Api-Key: {{.Key}}" '{{.Address}}/api/v1/logs'
`))

// Guide writes what the stack is and ready-to-paste command lines.
func (d *DemoStack) Guide(w io.Writer) error {
	var b strings.Builder
	if err := guide.Execute(&b, d); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}
