package kube

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/kube/cluster"
)

// TestREADMEInstallMatchesTier keeps the README's "Install on Kubernetes"
// text equal to what the tier applies: the kustomization (with the README's
// placeholder image and endpoints) and the three commands.
func TestREADMEInstallMatchesTier(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "## Install on Kubernetes")
	if start < 0 {
		t.Fatal(`README has no "## Install on Kubernetes" section`)
	}
	section := readme[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	kust := cluster.Kustomization("registry.example.com/weft", "v0.1.0", "http://10.0.0.10:2379,http://10.0.0.11:2379")
	if !strings.Contains(section, "```yaml\n"+kust+"```") {
		t.Errorf("README's kustomization differs from the tier's; want this block:\n%s", kust)
	}
	retry := int(cluster.InitNetworkRetry / time.Second)
	cmds := []string{
		kubectl(cluster.ApplyArgs("weft")),
		"until " + kubectl(cluster.InitNetworkArgs) + "; do sleep " + strconv.Itoa(retry) + "; done",
		kubectl(cluster.RolloutStatusArgs),
	}
	want := "```sh\n" + strings.Join(cmds, "\n") + "\n```"
	if !strings.Contains(section, want) {
		t.Errorf("README's install commands differ from the tier's; want:\n%s", want)
	}
}

func kubectl(args []string) string {
	return strings.Join(append([]string{"kubectl"}, args...), " ")
}
