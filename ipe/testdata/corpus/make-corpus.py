#!/usr/bin/python3
"""Writes the IPE policy corpus: one .pol file per case and EXPECT, which
holds the verdict predicted from reading Linux 6.12's security/ipe sources
(OK or the errno of the write to new_policy). The tests check the parser
against EXPECT and, in QEMU, the kernel against the parser.
Run from this directory: ./make-corpus.py"""
import os

H = "policy_name={} policy_version=0.0.1\n"
cases = []  # (file, bytes, verdict)


def add(name, text, verdict="OK"):
    if isinstance(text, str):
        text = text.encode("latin-1")
    cases.append((name + ".pol", text, verdict))


def ok(name, body, header=None):
    add(name, (header or H.format(name)) + body)


# --- accepted
ok("ok-basic", "DEFAULT action=ALLOW")
add("ok-trailing-comment", "policy_name=ok-trailing-comment policy_version=152.0.0 #This is comment\nDEFAULT action=ALLOW")
ok("ok-trailing-newlines", "DEFAULT action=ALLOW\n\n")
add("ok-crlf", "policy_name=ok-crlf policy_version=0.0.1\r\nDEFAULT action=ALLOW\r\nDEFAULT op=EXECUTE action=DENY\r\nop=EXECUTE boot_verified=TRUE action=ALLOW\r\n\r\n")
add("ok-cr-only", "policy_name=ok-cr-only policy_version=0.0.1\rDEFAULT action=DENY\rop=EXECUTE dmverity_signature=TRUE action=ALLOW\r")
ok("ok-whitespace", "DEFAULT\taction=ALLOW\n     \t     DEFAULT \t    op=EXECUTE      action=DENY\n"
   "op=EXECUTE boot_verified=TRUE action=ALLOW\n# this is a\tcomment\t\t\t\t\n"
   "DEFAULT \t op=KMODULE\t\t\t  action=DENY\r\nop=KMODULE boot_verified=TRUE action=ALLOW\n")
add("ok-special-chars", "policy_name=ok-special$@!*&^%\\:;{}() policy_version=0.0.0\nDEFAULT action=ALLOW")
add("ok-expanded-ascii", "policy_name=ok-ext\xff\xef policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW")
ok("ok-nul-truncates", "DEFAULT action=DENY\n\0op=EXECUTE this is garbage\n")
ok("ok-per-op-defaults", "".join("DEFAULT op=%s action=%s\n" % (o, "ALLOW" if i % 2 else "DENY") for i, o in enumerate(
    ["EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERT"])))
ok("ok-all-props", "DEFAULT action=ALLOW\n"
   "op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=DENY\n"
   "op=EXECUTE boot_verified=TRUE action=ALLOW\n"
   "op=EXECUTE dmverity_roothash=sha256:" + "ab" * 32 + " action=ALLOW\n"
   "op=EXECUTE dmverity_signature=TRUE action=ALLOW\n"
   "op=EXECUTE fsverity_digest=sha256:" + "cd" * 32 + " action=ALLOW\n"
   "op=EXECUTE fsverity_signature=TRUE action=ALLOW\n")
ok("ok-upper-hex", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:" + "AbCdEF0123456789" * 4 + " action=DENY\n")
ok("ok-any-alg", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=md5:00ff action=DENY\nop=KMODULE fsverity_digest=SHA256:00 action=DENY\n")
ok("ok-empty-hex", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256: action=DENY\n")
ok("ok-empty-alg", "DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=:00 action=DENY\n")
add("ok-version-plus", "policy_name=ok-version-plus policy_version=+1.+2.+3\nDEFAULT action=ALLOW")
add("ok-version-zeros", "policy_name=ok-version-zeros policy_version=007.00.065535\nDEFAULT action=ALLOW")
add("ok-version-max", "policy_name=ok-version-max policy_version=65535.65535.65535\nDEFAULT action=ALLOW")
ok("ok-nbsp-trailing", "DEFAULT action=ALLOW\xa0\xa0\n")
ok("ok-vt-ff-trailing", "DEFAULT action=ALLOW\v\f \t\n")
ok("ok-comment-glued", "DEFAULT action=ALLOW#comment\nop=EXECUTE boot_verified=TRUE action=DENY#x y z\n")
ok("ok-dup-props", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE boot_verified=FALSE action=DENY\n")
ok("ok-rule-no-props", "DEFAULT action=ALLOW\nop=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n")
add("ok-name-255", "policy_name=" + "n" * 255 + " policy_version=0.0.0\nDEFAULT action=ALLOW")
add("ok-tabs-header", "\t policy_name=ok-tabs-header\t\tpolicy_version=1.0.0 \t\nDEFAULT action=ALLOW")
ok("ok-props-any-op", "DEFAULT action=DENY\nop=KEXEC_IMAGE dmverity_signature=TRUE action=ALLOW\n"
   "op=KEXEC_INITRAMFS boot_verified=TRUE action=ALLOW\nop=X509_CERT fsverity_signature=FALSE action=ALLOW\n"
   "op=POLICY fsverity_digest=sha384:" + "00" * 48 + " action=ALLOW\nop=FIRMWARE action=ALLOW\n")
add("ok-name-equals-colon", "policy_name=ok=a:b/?\x01 policy_version=0.0.0\nDEFAULT action=ALLOW".replace("/", "|"))
add("ok-comments-first", "# a policy\n\n   \n#\tpolicy_name=x\npolicy_name=ok-comments-first policy_version=0.0.1\nDEFAULT action=ALLOW\n")
add("ok-name-dotdotdot", "policy_name=... policy_version=0.0.0\nDEFAULT action=ALLOW")
ok("ok-generated-like", "DEFAULT action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"
   "op=KMODULE boot_verified=TRUE action=ALLOW\nop=KMODULE dmverity_signature=TRUE action=ALLOW\n"
   "op=FIRMWARE boot_verified=TRUE action=ALLOW\nop=FIRMWARE dmverity_signature=TRUE action=ALLOW\n")

# --- rejected
def bad(name, verdict, body, header=None):
    add(name, (header or H.format(name)) + body, verdict)


V = "policy_name={} policy_version={}\nDEFAULT action=ALLOW\n"
for n, v, e in [("bad-version-negative", "-1236.0.0", "EINVAL"), ("bad-version-overflow", "999999.0.0", "ERANGE"),
                ("bad-version-65536", "1.65536.0", "ERANGE"), ("bad-version-two-parts", "255.0", "EBADMSG"),
                ("bad-version-four-parts", "111.0.0.0", "EBADMSG"), ("bad-version-trailing-dot", "1.0.0.", "EBADMSG"),
                ("bad-version-empty-part", "1..0", "EINVAL"), ("bad-version-hex", "0x1.0.0", "EINVAL"),
                ("bad-version-u64-overflow-then-letter", "99999999999999999999a.0.0", "ERANGE"),
                ("bad-version-plusplus", "++1.0.0", "EINVAL"), ("bad-version-letter", "1.0.1a", "EINVAL"),
                ("bad-version-bad-part-then-too-many", "1.x.0.0", "EINVAL")]:
    add(n, V.format(n, v), e)
add("bad-version-extra-token", "policy_name=x policy_version=1.0.0 extra\nDEFAULT action=ALLOW\n", "EBADMSG")
add("bad-nul-in-header", "policy_name=test\0policy_version=0.0.0\nDEFAULT action=ALLOW", "EBADMSG")
bad("bad-nul-before-rules", "EBADMSG", "\0DEFAULT action=ALLOW")
bad("bad-prop-value", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=abc action=ALLOW")
add("bad-missing-header", "DEFAULT action=ALLOW", "EBADMSG")
bad("bad-missing-default", "EBADMSG", "")
bad("bad-rule-order", "EBADMSG", "DEFAULT action=ALLOW\ndmverity_signature=TRUE op=EXECUTE action=ALLOW")
bad("bad-action-first", "EBADMSG", "DEFAULT action=ALLOW\naction=ALLOW op=EXECUTE dmverity_signature=TRUE")
bad("bad-unknown-op", "EBADMSG", "DEFAULT action=ALLOW\nop=UNKNOWN dmverity_signature=TRUE action=ALLOW")
add("bad-no-space-in-header", "policy_name=asdvpolicy_version=0.0.0\nDEFAULT action=ALLOW\n", "EBADMSG")
bad("bad-roothash-no-colon", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=GOOD_DOG action=ALLOW")
bad("bad-double-header", "EBADMSG", "policy_name=test policy_version=0.1.0\nDEFAULT action=ALLOW")
bad("bad-double-default", "EBADMSG", "DEFAULT action=ALLOW\nDEFAULT action=ALLOW\n")
bad("bad-double-op-default", "EBADMSG", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nDEFAULT op=EXECUTE action=ALLOW\n")
bad("bad-action-DEN", "EBADMSG", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DEN\n")
bad("bad-action-bare", "EBADMSG", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action\n")
bad("bad-unrecognized", "EBADMSG", "DEFAULT action=ALLOW\nUNKNOWN value=true\n")
bad("bad-old-style-roothash", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n")
bad("bad-old-style-fsverity", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n")
bad("bad-odd-hex", "EINVAL", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:abc action=DENY\n")
bad("bad-non-hex", "EINVAL", "DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:zz action=DENY\n")
bad("bad-lowercase-op", "EBADMSG", "DEFAULT action=ALLOW\nop=execute boot_verified=TRUE action=ALLOW\n")
bad("bad-lowercase-action", "EBADMSG", "DEFAULT action=allow\n")
bad("bad-lowercase-prop", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=true action=ALLOW\n")
bad("bad-lowercase-default", "EBADMSG", "default action=ALLOW\n")
bad("bad-default-with-prop", "EBADMSG", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE boot_verified=TRUE action=DENY\n")
bad("bad-global-default-with-prop", "EBADMSG", "DEFAULT boot_verified=TRUE action=DENY\n")
bad("bad-missing-one-op-default", "EBADMSG", "".join("DEFAULT op=%s action=ALLOW\n" % o for o in
    ["EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY"]))
add("bad-header-order", "policy_version=0.0.1 policy_name=bad-header-order\nDEFAULT action=ALLOW\n", "EBADMSG")
add("bad-empty-name", "policy_name= policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EBADMSG")
add("bad-header-name-only", "policy_name=bad-header-name-only\nDEFAULT action=ALLOW\n", "EBADMSG")
bad("bad-empty-roothash", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash= action=DENY\n")
add("bad-name-slash", "policy_name=a/b policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EACCES")
add("bad-name-dot", "policy_name=. policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EACCES")
add("bad-name-dotdot", "policy_name=.. policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EACCES")
add("bad-name-256", "policy_name=" + "m" * 256 + " policy_version=0.0.0\nDEFAULT action=ALLOW", "ENAMETOOLONG")
bad("bad-vt-inside", "EBADMSG", "DEFAULT\vaction=ALLOW\n")
bad("bad-nbsp-inside", "EBADMSG", "DEFAULT\xa0action=ALLOW\n")
bad("bad-rule-no-op", "EBADMSG", "DEFAULT action=ALLOW\nboot_verified=TRUE action=ALLOW\n")
bad("bad-only-action", "EBADMSG", "DEFAULT action=ALLOW\naction=DENY\n")
bad("bad-two-ops", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE op=KMODULE action=ALLOW\n")
bad("bad-action-not-last", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE action=ALLOW boot_verified=TRUE\n")
bad("bad-default-digest-error-first", "EINVAL", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE dmverity_roothash=sha256:abc action=ALLOW\n")
bad("bad-default-default", "EBADMSG", "DEFAULT DEFAULT action=ALLOW\n")
bad("bad-op-then-default", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE DEFAULT action=ALLOW\n")
bad("bad-comment-cuts-action", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE #action=ALLOW\n")
add("bad-comment-in-name", "policy_name=a#b policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EBADMSG")
add("bad-bom", "\xef\xbb\xbfpolicy_name=bad-bom policy_version=0.0.1\nDEFAULT action=ALLOW\n", "EBADMSG")
add("bad-utf16", "policy_name=bad-utf16 policy_version=0.0.1\nDEFAULT action=ALLOW\n".encode("utf-16-le"), "EBADMSG")
add("bad-only-comments", "# nothing here\n\n", "EBADMSG")
bad("bad-fsverity-sig-bad-value", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE fsverity_signature=1 action=ALLOW\n")
bad("bad-digest-with-space", "EBADMSG", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256: abcd action=DENY\n")

for f in os.listdir("."):
    if f.endswith(".pol"):
        os.remove(f)
with open("EXPECT", "w") as e:
    e.write("# file verdict (OK, or the errno of write(2) to /sys/kernel/security/ipe/new_policy); written by make-corpus.py\n")
    for name, text, verdict in cases:
        with open(name, "wb") as f:
            f.write(text)
        e.write("%s %s\n" % (name, verdict))
print(len(cases), "cases")
