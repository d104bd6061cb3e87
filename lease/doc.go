// Package lease holds weft's contract with the lease store: the Lease and
// Event types, the Store interface, the overlay Network config (flannel's
// <prefix>/config), the subnet math that picks a block, the flannel-compatible
// codecs for lease keys and values, and MemStore, an in-memory Store for unit
// tests. subnet.env, the agent's contract with the CNI plugin, is package
// subnetenv.
//
// Invariants:
//   - Standard library only.
//   - Every encoder writes exactly what flannel v0.28 writes:
//     lease values keep flannel's field names and order, with weft's optional
//     NodeName after them; decoders ignore unknown fields, as flannel does,
//     and reject values they cannot use with an error, never a panic.
//   - ParseNetwork always returns a defaulted, validated config; every
//     validation error is a *ConfigError naming the field and the reason.
//   - The first block of the Network is never handed out (SubnetMin defaults
//     to the second block); PickFree chooses at random among the first
//     PickWindow free blocks so that concurrent acquirers rarely collide.
//   - A reservation (a key without an etcd lease) is never renewed, never
//     given a lease and never released.
package lease
