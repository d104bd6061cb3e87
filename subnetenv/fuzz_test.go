package subnetenv

import "testing"

func FuzzParseSubnetEnv(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\n", "#\n=\n", "A=\"b\",c",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseSubnetEnv(b)
		if err != nil {
			return
		}
		if _, err := ParseSubnetEnv(env.Marshal()); err != nil {
			t.Fatalf("re-parse of %q: %v", env.Marshal(), err)
		}
	})
}
