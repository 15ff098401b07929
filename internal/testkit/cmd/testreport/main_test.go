package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA","Elapsed":1.5}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:3: boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0.2}`,
		`{"Action":"pass","Package":"p","Test":"TestC/sub","Elapsed":9}`,
		`{"Action":"pass","Package":"p","Test":"TestC","Elapsed":9.1}`,
		`{"Action":"output","Package":"p","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t9.9s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":9.9}`,
		`# q [build failed]`,
	}, "\n")
	var out strings.Builder
	failed, err := report(strings.NewReader(in), &out, 2, func() string { return "host: test" })
	if err != nil || !failed {
		t.Fatalf("failed=%v err=%v", failed, err)
	}
	want := "    b_test.go:3: boom\nFAIL\tp\t9.9s\n# q [build failed]\n\nslowest tests:\n     9.1s  p TestC\n     1.5s  p TestA\nhost: test\n" +
		"\nfailures (first lines):\n  p TestB: b_test.go:3: boom\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
