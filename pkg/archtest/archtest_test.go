package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/interviewvm/controlplane"

// pkg is what the rules read of one package of the module.
type pkg struct {
	ImportPath   string
	Imports      []string // direct, non-test
	Deps         []string // transitive, non-test
	TestImports  []string
	XTestImports []string
}

// rel is a path relative to the module ("pkg/session"), or the path
// itself outside the module.
func rel(path string) string {
	if path == module {
		return "."
	}
	return strings.TrimPrefix(path, module+"/")
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func loadPackages(t *testing.T) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, msg)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs[rel(p.ImportPath)] = p
	}
	// A listing that lost most of the module would pass every rule.
	for _, want := range []string{"pkg/session", "pkg/controlapi", "pkg/controller", "pkg/sessionvm", "cmd/sessionvm", "cmd/controller", "bench"} {
		if _, ok := pkgs[want]; !ok {
			t.Fatalf("go list did not list %s (%d packages listed)", want, len(pkgs))
		}
	}
	return pkgs
}

// TestSessionIsStandardLibraryOnly: the domain types link nothing but the
// standard library (a standard package's path has no dot in its first
// element).
func TestSessionIsStandardLibraryOnly(t *testing.T) {
	p := loadPackages(t)["pkg/session"]
	for _, d := range p.Deps {
		if first, _, _ := strings.Cut(d, "/"); strings.Contains(first, ".") {
			t.Errorf("pkg/session links %s", d)
		}
	}
}

// banned is a rule: the packages matching who never link any of never.
type banned struct {
	who   []string // module-relative prefixes
	never []string
	why   string
}

var (
	echo        = "github.com/labstack/echo"
	echoContrib = "github.com/labstack/echo-contrib"
	pgx         = "github.com/jackc/pgx"
	river       = "github.com/riverqueue/river"
	openaiGo    = "github.com/openai/openai-go"
)

func TestLinkRules(t *testing.T) {
	pkgs := loadPackages(t)
	rules := []banned{
		{
			who: []string{"cmd/sessionvm", "pkg/sessionvm"},
			never: []string{
				echo, echoContrib, pgx, river,
				module + "/pkg/flymachines", module + "/pkg/postgres", module + "/pkg/controlapi",
				module + "/pkg/provision", module + "/pkg/controller",
			},
			why: "the session VM links nothing of the controller",
		},
		{
			who: []string{"pkg/controlapi"},
			never: []string{
				pgx, river, module + "/pkg/postgres", module + "/pkg/flymachines",
				module + "/pkg/flyvm", module + "/pkg/localvm", module + "/pkg/provision",
			},
			why: "handlers hold no SQL and make no provider calls: they use the interfaces they declare",
		},
		{
			who: []string{"pkg/provision"},
			never: []string{
				pgx, echo, module + "/pkg/postgres", module + "/pkg/flymachines",
				module + "/pkg/flyvm", module + "/pkg/localvm", module + "/pkg/controlapi",
			},
			why: "the lifecycle declares the store and Machines interfaces it needs",
		},
		{
			who: []string{"pkg/prewarm"},
			never: []string{
				pgx, echo, module + "/pkg/postgres", module + "/pkg/flymachines", module + "/pkg/flyvm",
				module + "/pkg/localvm", module + "/pkg/controlapi", module + "/pkg/provision",
			},
			why: "the pre-warmer declares the store, machines and lifecycle interfaces it needs",
		},
		{
			who:   []string{"pkg/flymachines"},
			never: []string{module + "/pkg/session", module + "/pkg/provision", pgx, echo},
			why:   "the Fly client speaks Fly's types only",
		},
	}
	for _, r := range rules {
		for path, p := range pkgs {
			if !slices.ContainsFunc(r.who, func(w string) bool { return under(path, w) }) {
				continue
			}
			for _, d := range p.Deps {
				for _, n := range r.never {
					if under(d, n) {
						t.Errorf("%s links %s: %s", path, d, r.why)
					}
				}
			}
		}
	}
}

// TestNothingUnderPkgImportsTheController: pkg/controller assembles the
// packages; none of them, nor their tests, imports it back.
func TestNothingUnderPkgImportsTheController(t *testing.T) {
	for path, p := range loadPackages(t) {
		if !under(path, "pkg") || under(path, "pkg/controller") {
			continue
		}
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if under(imp, module+"/pkg/controller") {
				t.Errorf("%s imports %s", path, imp)
			}
		}
	}
}

// TestOnlyTheirOwnersImport: a direct import of what, by a non-test package of the
// module, is allowed only in the packages listed (and below them).
func TestOnlyTheirOwnersImport(t *testing.T) {
	pkgs := loadPackages(t)
	rules := []struct {
		what string
		only []string
		why  string
	}{
		{module + "/pkg/flyvm", []string{"pkg/controller"}, "only the wiring picks the machine provider"},
		{module + "/pkg/localvm", []string{"pkg/controller"}, "only the wiring picks the machine provider"},
		{module + "/pkg/flymachines", []string{"pkg/flymachines", "pkg/flyvm", "pkg/controller", "bench"}, "the Fly client is the fly provider's"},
		{module + "/pkg/postgres", []string{"pkg/postgres", "pkg/controller", "bench"}, "only the wiring opens the database"},
		{pgx, []string{"pkg/postgres", "pkg/jobs", "pkg/controller", "bench"},
			"SQL lives in pkg/postgres (River's pkg/jobs runs on the pool; the wiring passes transactions from the store's hooks to it)"},
		{echo, []string{"pkg/controlapi"}, "the HTTP framework is the API's"},
		{river, []string{"pkg/jobs", "pkg/webhooks", "pkg/insights", "pkg/controller"},
			"River's client lives in pkg/jobs; the workers in the packages whose jobs they work"},
		{openaiGo, []string{"pkg/insights", "pkg/realtime", "bench"}, "the OpenAI SDK is used by the Realtime client and the Responses API scorer only (and by the benchmarks, as the limit the scorer is measured against)"},
	}
	for _, r := range rules {
		for path, p := range pkgs {
			if slices.ContainsFunc(r.only, func(o string) bool { return under(path, o) }) {
				continue
			}
			for _, imp := range p.Imports {
				if under(imp, r.what) {
					t.Errorf("%s imports %s: %s", path, imp, r.why)
				}
			}
		}
	}
}
