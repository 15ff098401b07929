package vieterserver

import (
	"os"
	"sort"
	"strconv"
	"testing"
)

func itoa(i int) string { return strconv.Itoa(i) }

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sortStrings(s []string) { sort.Strings(s) }
