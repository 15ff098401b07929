package builder

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestStorageThroughOCI: builder stores image bytes only through oci's
// exported API (oci.Store, oci.Layout) and writes files atomically only
// through lockfile. It reads builder's own sources: no path under the
// store's directory, no OCI layout file names, no pkg/v1/layout or
// partial (the layout's reader and writer are oci's), no temporary-file
// writer of its own.
func TestStorageThroughOCI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	forbiddenImports := map[string]string{
		"github.com/google/go-containerregistry/pkg/v1/layout":  "OCI layouts are oci.Layout's",
		"github.com/google/go-containerregistry/pkg/v1/partial": "images from the store are oci.Store.Image's",
	}
	forbiddenNames := []string{"blobs", "index.json", "oci-layout", "refs.json", "gc.lock"}
	forbiddenCalls := map[string]string{
		"os.CreateTemp": "atomic writes are lockfile.Write's",
		"os.WriteFile":  "atomic writes are lockfile.Write's",
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if why, ok := forbiddenImports[p]; ok {
				t.Errorf("%s imports %s: %s", fset.Position(imp.Pos()), p, why)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ImportSpec:
				return false
			case *ast.BasicLit:
				if n.Kind != token.STRING {
					break
				}
				s, _ := strconv.Unquote(n.Value)
				for _, bad := range forbiddenNames {
					if s == bad || strings.Contains(s, bad+"/") || strings.HasSuffix(s, "/"+bad) {
						t.Errorf("%s: string %q names the image store's or a layout's files", fset.Position(n.Pos()), s)
					}
				}
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok {
					if why, ok := forbiddenCalls[x.Name+"."+n.Sel.Name]; ok {
						t.Errorf("%s: %s.%s: %s", fset.Position(n.Pos()), x.Name, n.Sel.Name, why)
					}
				}
				// m.store.Dir(), store.Dir(): a path under the store.
				if n.Sel.Name == "Dir" {
					if strings.Contains(strings.ToLower(types.ExprString(n.X)), "store") {
						t.Errorf("%s: builder asks the store for its directory", fset.Position(n.Pos()))
					}
				}
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("checked %d files; run from the builder directory", checked)
	}
}
