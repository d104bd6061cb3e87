package host

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The package's promise (doc.go) is that nothing outside it enters a
// namespace, opens a netlink handle or dumps netlink tables itself. This test
// holds the rest of the module to it: it parses every non-test Go file
// outside host/ and test/ (the harnesses build namespaces on purpose).

// forbiddenImports may be imported only by host.
var forbiddenImports = []string{
	"github.com/vishvananda/netns",
	"github.com/containernetworking/plugins/pkg/ns",
}

// forbiddenUse reports whether pkg.name (pkg an import path) is one of the
// functions only host may use: netlink handles and sockets in a namespace,
// entering a namespace, and netlink's package-level dumps and subscriptions
// (which neither retry an interrupted dump nor say which namespace they
// speak to).
func forbiddenUse(pkg, name string) bool {
	switch pkg {
	case "github.com/vishvananda/netlink":
		switch name {
		case "LinkList", "AddrList", "NeighList", "NeighProxyList":
			return true
		}
		return strings.HasPrefix(name, "NewHandle") || strings.HasPrefix(name, "RouteList") ||
			strings.HasPrefix(name, "RuleList") || strings.Contains(name, "Subscribe")
	case "github.com/vishvananda/netlink/nl":
		return name == "GetNetlinkSocketAt"
	case "golang.org/x/sys/unix":
		return name == "Setns"
	}
	return false
}

func TestBoundary(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "host" || rel == "test" || rel != "." && skippedDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		v, err := boundaryViolations(fset, rel, src)
		found = append(found, v...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range found {
		t.Error(v)
	}
	if len(found) > 0 {
		t.Logf("only package host may enter namespaces, open netlink handles or dump netlink tables; %d uses outside it", len(found))
	}
}

// TestBoundaryCatches shows the check finds each kind of use, however the
// package is named locally.
func TestBoundaryCatches(t *testing.T) {
	src := `package p

import (
	"github.com/containernetworking/plugins/pkg/ns"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	_ "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func f(h any) {
	_, _ = ns.GetNS("x")
	_, _ = vnl.NewHandle()
	_, _ = vnl.RouteListFiltered(0, nil, 0)
	_ = vnl.LinkSubscribe
	_, _ = nl.GetNetlinkSocketAt(0, 0, 0)
	_ = unix.Setns(0, 0)
	_ = h.(*vnl.Handle)
	switch h.(type) {
	case *vnl.Handle:
	}
	_, _ = vnl.LinkByName("ok")
	_ = h.(*vnl.Bridge)
}
`
	got, err := boundaryViolations(token.NewFileSet(), "p.go", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"p.go:4: import of github.com/containernetworking/plugins/pkg/ns",
		"p.go:7: import of github.com/vishvananda/netns",
		"p.go:13: use of netlink.NewHandle",
		"p.go:14: use of netlink.RouteListFiltered",
		"p.go:15: use of netlink.LinkSubscribe",
		"p.go:16: use of nl.GetNetlinkSocketAt",
		"p.go:17: use of unix.Setns",
		"p.go:18: type assertion to *netlink.Handle",
		"p.go:20: type assertion to *netlink.Handle",
	}
	if !slices.Equal(got, want) {
		t.Errorf("found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// boundaryViolations lists the forbidden imports and uses in one file, as
// "name:line: what".
func boundaryViolations(fset *token.FileSet, name string, src []byte) ([]string, error) {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []string
	report := func(pos token.Pos, format string, args ...any) {
		out = append(out, fmt.Sprintf("%s:%d: %s", name, fset.Position(pos).Line, fmt.Sprintf(format, args...)))
	}
	local := map[string]string{} // local package name -> import path
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if slices.Contains(forbiddenImports, path) {
			report(imp.Pos(), "import of %s", path)
		}
		n := filepath.Base(path)
		if imp.Name != nil {
			n = imp.Name.Name
		}
		local[n] = path
	}
	// pkgSel resolves X.Sel where X names an import.
	pkgSel := func(e ast.Expr) (path, sel string, ok bool) {
		s, ok := e.(*ast.SelectorExpr)
		if !ok {
			return "", "", false
		}
		id, ok := s.X.(*ast.Ident)
		if !ok || local[id.Name] == "" {
			return "", "", false
		}
		return local[id.Name], s.Sel.Name, true
	}
	isHandlePtr := func(e ast.Expr) bool {
		star, ok := e.(*ast.StarExpr)
		if !ok {
			return false
		}
		path, sel, ok := pkgSel(star.X)
		return ok && path == "github.com/vishvananda/netlink" && sel == "Handle"
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if path, sel, ok := pkgSel(n); ok && forbiddenUse(path, sel) {
				report(n.Pos(), "use of %s.%s", filepath.Base(path), sel)
			}
		case *ast.TypeAssertExpr:
			if n.Type != nil && isHandlePtr(n.Type) {
				report(n.Pos(), "type assertion to *netlink.Handle")
			}
		case *ast.TypeSwitchStmt:
			for _, c := range n.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					if isHandlePtr(e) {
						report(e.Pos(), "type assertion to *netlink.Handle")
					}
				}
			}
		}
		return true
	})
	return out, nil
}

// skippedDir is a directory the go tool ignores, or one holding no module
// code.
func skippedDir(name string) bool {
	return name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// moduleRoot is the directory of the go.mod above the test's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}
