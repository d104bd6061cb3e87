package manifests_test

import (
	"os"
	"testing"

	weftagent "github.com/weftnet/weft/agent"
)

// The conflist has one source, this directory's file: the agent's built-in
// default (installed without --cni-conf-source) is the same bytes.
func TestAgentDefaultConflistIsTheManifests(t *testing.T) {
	b, err := os.ReadFile(conflistFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != weftagent.DefaultConflist {
		t.Errorf("weftagent.DefaultConflist differs from %s; copy the file into the constant:\nfile:\n%s\nconstant:\n%s", conflistFile, b, weftagent.DefaultConflist)
	}
}
