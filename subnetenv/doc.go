// Package subnetenv is the contract between the agent and the CNI plugin on
// one node: subnet.env, the flannel-compatible file the agent writes once the
// node holds a subnet and the plugin reads on every ADD, and the agent's lock
// file next to it, which tells the plugin whether the agent that wrote
// subnet.env is still running.
//
// Invariants:
//   - Standard library (and atomicfile) only: the CNI binary imports this
//     package and must link neither etcd nor the lease store.
//   - Marshal writes exactly the keys and line order flannel v0.28 writes;
//     ParseSubnetEnv accepts what flannel writes, reports every missing
//     required key in one *MissingKeysError, and never panics.
//   - WriteSubnetEnv replaces the file atomically with mode 0644.
package subnetenv
