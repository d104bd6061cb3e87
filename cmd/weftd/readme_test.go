package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestREADMEFlagTable keeps the README's flag table and `weftd run`'s flags in step.
func TestREADMEFlagTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	flagRe := regexp.MustCompile("`--([a-z0-9-]+)`")
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		for _, m := range flagRe.FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	root := newRootCmd()
	run, _, err := root.Find([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	actual := map[string]bool{}
	add := func(f *pflag.Flag) {
		if f.Name != "help" {
			actual[f.Name] = true
		}
	}
	run.LocalFlags().VisitAll(add)
	root.PersistentFlags().VisitAll(add)
	var missing, stale []string
	for f := range actual {
		if !documented[f] {
			missing = append(missing, f)
		}
	}
	for f := range documented {
		if !actual[f] {
			stale = append(stale, f)
		}
	}
	slices.Sort(missing)
	slices.Sort(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Errorf("README flag table out of date: undocumented %v, documented but absent %v", missing, stale)
	}
}
