// Package snapshotter is osguard's containerd snapshotter: every layer
// it holds is an EROFS image on a dm-verity device whose root hash the
// kernel has checked against the publisher's signature, and every
// container's root file system is an overlayfs with those layers below and
// a writable directory on top. containerd (Debian's 1.7) reaches it as a
// proxy plugin over gRPC on a unix socket (Serve); containerd's snapshot
// service wraps it in its own metadata (namespaces, garbage collection),
// and the package keeps its own bookkeeping in containerd's bolt
// metadata store (core/snapshots/storage), as the stock overlay snapshotter does.
//
// # Why a snapshotter, and why Debian's containerd
//
// Debian trixie's containerd 1.7.24 loads proxy plugins of type "snapshot",
// "content" and "diff" (services/server/server.go), so no containerd 2.x is
// needed on the node. A snapshotter is enough: the conversion to EROFS and
// the signature check happen when the image is imported, and a container's
// root file system only needs the mounts returned here. A proxy differ was
// not needed, because unpacking into this snapshotter is refused anyway.
//
// # How a layer gets in
//
// containerd normally unpacks a layer itself: it prepares an empty snapshot,
// writes the tar into its mounts and commits it. Here that is refused
// (ErrUnsigned): a snapshot written that way would carry nothing the kernel
// can check. Instead `osguard image import` converts the layer tar to EROFS
// and its hash tree (package layer: the same bytes the publisher signed),
// leaves it with the publisher's signature in the staging directory, and
// calls Prepare through containerd with LayerLabel set to the layer's diff
// ID and then Commit. Prepare adopts the staged layer and creates its
// verity device with root_hash_sig_key_desc: this is the moment the kernel
// checks the signature against its trusted keyrings (the UEFI db, through
// the platform keyring), and an error from it (ENOKEY, EKEYREJECTED) fails
// the Prepare and removes the layer. Commit then makes the layer a
// committed snapshot named by its chain ID, as containerd expects, so that
// `ctr run --snapshotter osguard` finds the image unpacked.
//
// # Why the kernel, not this package, is the gate
//
// IPE allows execution only from files on dm-verity devices with a
// verified signature, judged on the real inode under overlayfs. A file a
// container writes lands in its writable directory on /var and cannot be
// executed; a layer whose bytes change after conversion fails in
// dm-verity with an I/O error. The snapshotter only decides which devices
// to create; it cannot make an unsigned one pass.
//
// # Lifetime
//
// A layer directory (layers/<hex of diff ID>) holds layer.img, layer.json
// (Record) and layer.p7. Layers are shared by every chain that uses them
// and removed, with their mount and verity device, when their last
// snapshot is. After a reboot the devices are created again, lazily, the
// first time a container needs them, and the kernel checks the signatures
// again. Loop devices clear themselves (package loop).
package snapshotter
