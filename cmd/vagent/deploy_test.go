package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vieter-v/vagent/sandbox"
)

// node walks a decoded YAML document: node(doc, "spec", "template") or,
// for lists, an index as a string ("0").
func node(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for i, k := range keys {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[k]; !ok {
				t.Fatalf("%s: no key %q", strings.Join(keys[:i], "."), k)
			}
		case []any:
			n, err := strconv.Atoi(k)
			if err != nil || n >= len(c) {
				t.Fatalf("%s: no element %q", strings.Join(keys[:i], "."), k)
			}
			v = c[n]
		default:
			t.Fatalf("%s: %T is not a map or a list", strings.Join(keys[:i], "."), v)
		}
	}
	return v
}

// byName finds the element of a list of maps whose "name" is name.
func byName(t *testing.T, list any, name string) map[string]any {
	t.Helper()
	l, _ := list.([]any)
	for _, e := range l {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	t.Fatalf("no element named %q in %v", name, list)
	return nil
}

// TestDaemonSetExample: contrib/kubernetes/vagent-daemonset.yaml parses,
// its agent.yaml is a valid configuration, and the DaemonSet agrees with
// it: privileged, the data dir on a hostPath, the configuration from the
// ConfigMap, the API key from a Secret through VIETER_API_KEY_FILE, a
// termination grace period covering shutdown_grace plus deliver_timeout,
// and probes on /readyz and /healthz at metrics_address's port.
func TestDaemonSetExample(t *testing.T) {
	data, err := os.ReadFile("../../contrib/kubernetes/vagent-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		docs[d["kind"].(string)] = d
	}
	for _, k := range []string{"Namespace", "ConfigMap", "DaemonSet"} {
		if docs[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	if _, ok := docs["Secret"]; ok {
		t.Error("the example holds a Secret: the API key belongs in kubectl create secret, not in a file")
	}

	// The configuration, as the agent would load it with the key file set.
	cm := docs["ConfigMap"]
	agentYAML, _ := node(t, cm, "data", "agent.yaml").(string)
	cfg, err := parseConfig("agent.yaml", []byte(agentYAML), func(k string) string {
		if k == "VIETER_API_KEY" {
			return "from-the-secret"
		}
		return ""
	})
	if err != nil {
		t.Fatalf("the ConfigMap's agent.yaml: %v", err)
	}
	if strings.Contains(agentYAML, "api_key:") {
		t.Error("the ConfigMap holds an api_key")
	}

	ds := docs["DaemonSet"]
	if ns := node(t, ds, "metadata", "namespace"); ns != node(t, cm, "metadata", "namespace") {
		t.Errorf("DaemonSet in namespace %v, ConfigMap in %v", ns, node(t, cm, "metadata", "namespace"))
	}
	pod := node(t, ds, "spec", "template", "spec")
	ctr := byName(t, node(t, pod, "containers"), "vagent")
	if node(t, ctr, "securityContext", "privileged") != true {
		t.Error("the container is not privileged")
	}
	if hp, _ := node(t, pod, "hostPID").(bool); hp {
		t.Error("hostPID is not needed")
	}
	args, _ := node(t, ctr, "args").([]any)
	if len(args) != 2 || args[0] != "run" {
		t.Fatalf("args %v, want run FILE", args)
	}
	cfgPath := args[1].(string)

	// Mounts: the data dir from a hostPath, agent.yaml from the ConfigMap,
	// the key file from the Secret.
	mounts := node(t, ctr, "volumeMounts")
	volumes := node(t, pod, "volumes")
	volumeAt := func(p string) map[string]any {
		t.Helper()
		for _, m := range mounts.([]any) {
			m := m.(map[string]any)
			mp := m["mountPath"].(string)
			if p == mp || strings.HasPrefix(p, mp+"/") {
				return byName(t, volumes, m["name"].(string))
			}
		}
		t.Fatalf("nothing mounted at %s", p)
		return nil
	}
	dataVol := volumeAt(cfg.DataDir)
	if node(t, dataVol, "hostPath", "path") == nil {
		t.Errorf("data dir %s is not a hostPath: %v", cfg.DataDir, dataVol)
	}
	if v := volumeAt(cfgPath); node(t, v, "configMap", "name") != node(t, cm, "metadata", "name") || path.Base(cfgPath) != "agent.yaml" {
		t.Errorf("%s is not agent.yaml of the ConfigMap: %v", cfgPath, v)
	}
	// pasta's device, for the builds' isolated network (the default).
	if cfg.NetworkMode() == sandbox.NetworkIsolated {
		if v := volumeAt("/dev/net/tun"); node(t, v, "hostPath", "path") != "/dev/net/tun" || node(t, v, "hostPath", "type") != "CharDevice" {
			t.Errorf("/dev/net/tun is not the node's character device: %v", v)
		}
	}
	keyEnv := byName(t, node(t, ctr, "env"), "VIETER_API_KEY_FILE")
	keyFile, _ := keyEnv["value"].(string)
	if v := volumeAt(keyFile); node(t, v, "secret", "secretName") == nil {
		t.Errorf("VIETER_API_KEY_FILE %s is not in a Secret volume: %v", keyFile, v)
	}

	// Stopping: Kubernetes waits for the drain.
	grace, _ := node(t, pod, "terminationGracePeriodSeconds").(int)
	if need := cfg.ShutdownGrace.D() + cfg.DeliverTimeout.D(); time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d does not cover shutdown_grace + deliver_timeout = %s", grace, need)
	}

	// Probes on the metrics address.
	_, port, err := net.SplitHostPort(cfg.MetricsAddress)
	if err != nil {
		t.Fatalf("metrics_address %q: %v", cfg.MetricsAddress, err)
	}
	if host, _, _ := net.SplitHostPort(cfg.MetricsAddress); host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("metrics_address %q does not listen on the pod's address: probes cannot reach it", cfg.MetricsAddress)
	}
	portNum := byName(t, node(t, ctr, "ports"), "metrics")["containerPort"]
	if strconv.Itoa(portNum.(int)) != port {
		t.Errorf("container port %v, metrics_address port %s", portNum, port)
	}
	for probe, want := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if p := node(t, ctr, probe, "httpGet", "path"); p != want {
			t.Errorf("%s path %v, want %s", probe, p, want)
		}
		if p := node(t, ctr, probe, "httpGet", "port"); p != "metrics" && p != portNum {
			t.Errorf("%s port %v, want the metrics port", probe, p)
		}
	}
}
