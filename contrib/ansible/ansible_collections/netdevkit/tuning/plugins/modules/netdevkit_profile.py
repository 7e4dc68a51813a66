#!/usr/bin/python
"""Ansible module netdevkit.tuning.netdevkit_profile: run netdevkit's own apply/restore."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: netdevkit_profile
short_description: Apply (or undo) a netdevkit NAPI tuning profile
description:
  - Runs C(netdevkit apply) on the managed host, so a profile is applied exactly as
    netdevkit applies it by hand, journaled, rolled back on a refusal.
  - Check mode is C(netdevkit apply --dry-run); C(--diff) shows netdevkit's own
    C(before -> after) lines; C(changed) is true only when a setting changed.
  - A failure carries netdevkit's one-line error as C(msg).
  - I(state=absent) puts back what the journal holds for the interfaces the profile
    covers (C(netdevkit restore --netns N --ifname I)).
  - To keep a profile applied across resets and hotplug, also run the
    C(netdevkit-profile@.service) unit (docs/fleet.md).
options:
  content:
    description: The profile, inline (TOML text). Exactly one of I(content) or I(path).
    type: str
  path:
    description: A profile file on the managed host.
    type: path
  state:
    description: C(present) applies the profile, C(absent) undoes it.
    type: str
    choices: [present, absent]
    default: present
  backend:
    description: netdevkit's tuning backend (C(auto), C(netlink) or C(sysfs)).
    type: str
  executable:
    description: The netdevkit program on the managed host.
    type: str
    default: netdevkit
  state_dir:
    description: netdevkit's state directory (its journal); default /run/netdevkit.
    type: path
requirements:
  - netdevkit on the managed host, run as root (CAP_NET_ADMIN)
author:
  - netdevkit developers
"""

EXAMPLES = r"""
- name: Tune the web servers' NICs for IRQ suspension
  netdevkit.tuning.netdevkit_profile:
    content: |
      [[interface]]
      match = "eth*"
      preset = "suspend"

- name: The same from a file the play copied
  netdevkit.tuning.netdevkit_profile:
    path: /etc/netdevkit/web.toml

- name: Undo it
  netdevkit.tuning.netdevkit_profile:
    path: /etc/netdevkit/web.toml
    state: absent
"""

RETURN = r"""
changes:
  description: netdevkit's plan as JSON (target, before, after, changed knobs), present only.
  returned: state=present
  type: list
  elements: dict
results:
  description: netdevkit restore's (or, in check mode, napi diff's) rows, state=absent.
  returned: state=absent
  type: list
  elements: dict
journal:
  description: The journal file netdevkit wrote the previous values to.
  returned: always
  type: str
"""

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

#: the temporary file holding an inline profile -> how messages name it
INLINE = {}


def run_netdevkit(module, argv):
    """netdevkit *argv*; on failure, fail with its one-line error."""
    env = {}
    if module.params["state_dir"]:
        env["NETDEVKIT_STATE_DIR"] = module.params["state_dir"]
    cmd = [module.params["executable"], *argv]
    rc, out, err = module.run_command(cmd, environ_update=env)
    if rc != 0:
        line = (err.strip().splitlines() or [f"netdevkit exited with status {rc}"])[-1]
        for path, name in INLINE.items():
            line = line.replace(path, name)
        module.fail_json(msg=line.removeprefix("netdevkit: error: "), rc=rc, cmd=cmd)
    return out


def apply_args(module, profile):
    args = ["apply", profile]
    if module.params["backend"]:
        args += ["--backend", module.params["backend"]]
    return args


def present(module, profile):
    result = {}
    if module._diff:
        text = run_netdevkit(module, [*apply_args(module, profile), "--dry-run"])
        lines = [
            line
            for line in text.splitlines()
            if line != "no changes" and not line.startswith(("dry run:", "("))
        ]
        result["diff"] = {"prepared": "\n".join(lines) + ("\n" if lines else "")}
    argv = apply_args(module, profile) + ["-j"] + (["--dry-run"] if module.check_mode else [])
    report = json.loads(run_netdevkit(module, argv))
    result["changes"] = report["changes"]
    result["journal"] = report["journal"]
    result["changed"] = any(c["changed"] for c in report["changes"])
    return result


def absent(module, profile):
    plan = json.loads(run_netdevkit(module, [*apply_args(module, profile), "--dry-run", "-j"]))
    covered = sorted(
        {(c["target"]["netns"], c["target"]["ifname"]) for c in plan["changes"]},
        key=lambda t: (t[0] or "", t[1]),
    )
    rows, changed, journal = [], False, plan["journal"]
    for netns, ifname in covered:
        where = ["--ifname", ifname] + (["--netns", netns] if netns else [])
        if module.check_mode:
            found = json.loads(run_netdevkit(module, ["napi", "diff", *where, "-j"]))
            changed |= any(r.get("differs") for r in found)
        else:
            found = json.loads(run_netdevkit(module, ["restore", *where, "-j"]))
            journal = found["journal"]
            found = found["results"]
            changed |= any(r.get("status") == "restored" for r in found)
        rows += found
    return {"results": rows, "changed": changed, "journal": journal}


def main():
    module = AnsibleModule(
        argument_spec={
            "content": {"type": "str"},
            "path": {"type": "path"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "backend": {"type": "str"},
            "executable": {"type": "str", "default": "netdevkit"},
            "state_dir": {"type": "path"},
        },
        mutually_exclusive=[("content", "path")],
        required_one_of=[("content", "path")],
        supports_check_mode=True,
    )
    tmp = None
    profile = module.params["path"]
    if module.params["content"] is not None:
        fd, tmp = tempfile.mkstemp(prefix="netdevkit-profile-", suffix=".toml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(module.params["content"])
        profile = tmp
        INLINE[tmp] = "content"
    try:
        if module.params["state"] == "present":
            result = present(module, profile)
        else:
            result = absent(module, profile)
    finally:
        if tmp is not None:
            os.unlink(tmp)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
