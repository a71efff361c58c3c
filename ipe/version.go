package ipe

// CanActivate reports whether the kernel lets a policy with version next
// become active while a policy with version active is: ipe_set_active_pol
// refuses (EINVAL) a lower version, so a node cannot be rolled back.
func CanActivate(active, next Version) bool { return next.Uint64() >= active.Uint64() }

// CanUpdate reports whether the kernel accepts next through
// policies/NAME/update in place of old (ipe_update_policy): the same name
// and a strictly higher version (otherwise EINVAL or ESTALE).
func CanUpdate(old, next *Policy) bool {
	return old.Name == next.Name && next.Version.Uint64() > old.Version.Uint64()
}
