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
//   - IPv4-only, dual stack and IPv6-only networks are supported. An
//     IPv6-only lease has the zero Subnet and the key "0.0.0.0-0&<v6>-<len6>":
//     a lease is identified by its Key, never by Subnet alone.
//   - The first block of the Network is never handed out (SubnetMin defaults
//     to the second block); PickFree chooses at random among the first
//     PickWindow free blocks so that concurrent acquirers rarely collide,
//     for each family on its own (the IPv6 block is never paired with the
//     IPv4 one), in time proportional to the blocks in use, never to the
//     size of the range.
//   - A reservation (a key without an etcd lease) is never renewed, never
//     given a lease and never released.
package lease
