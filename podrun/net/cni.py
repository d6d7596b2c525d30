"""A CNI runtime for podrun (CNI spec 0.4/1.0 conventions): each plugin of a network list is run
with ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and
``CNI_PATH`` in its environment and the plugin's config (with ``name``, ``cniVersion`` and the
previous plugin's ``prevResult``) on stdin.  ADD runs the plugins in order and returns the last
result; DEL runs them in reverse and ignores nothing but "not found" style failures."""

from __future__ import annotations

import json
import os
import subprocess

from podrun.errors import NotFoundError, PodrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CNIError(PodrunError):
    pass


def _find(plugin: str, path: list[str]) -> str:
    for d in path:
        candidate = os.path.join(d, plugin)
        if os.access(candidate, os.X_OK):
            return candidate
    raise NotFoundError(f"CNI plugin {plugin!r} not found in {':'.join(path)}",
                        hint="install Debian's containernetworking-plugins, or set PODRUN_CNI_PATH")


def _run(command: str, conflist: dict[str, Any], plugin: dict[str, Any], prev: Any, env: dict[str, str],
         path: list[str]) -> Any:
    conf = dict(plugin, name=conflist["name"], cniVersion=conflist["cniVersion"])
    if prev is not None:
        conf["prevResult"] = prev
    exe = _find(str(plugin["type"]), path)
    env = dict(env, CNI_COMMAND=command, PATH=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    stdin = json.dumps(conf, separators=(",", ":")).encode()
    res = subprocess.run([exe], input=stdin, capture_output=True, timeout=120, env=env)
    out = res.stdout.decode(errors="replace").strip()
    if res.returncode != 0:
        try:
            doc = json.loads(out)
            msg = f"{doc.get('msg', '')} {doc.get('details', '')}".strip() or out
        except ValueError:
            msg = out or res.stderr.decode(errors="replace").strip()
        raise CNIError(f"network {conflist['name']}: plugin {plugin['type']} {command} failed: {msg}")
    if command == "ADD":
        try:
            return json.loads(out) if out else prev
        except ValueError:
            raise CNIError(f"network {conflist['name']}: plugin {plugin['type']} printed no JSON result") from None
    return None


def _env(container_id: str, netns: str, ifname: str, args: list[tuple[str, str]], path: list[str]) -> dict[str, str]:
    return {"CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in [("IgnoreUnknown", "1"), *args]),
            "CNI_PATH": ":".join(path)}


def add(conflist: dict[str, Any], container_id: str, netns: str, ifname: str, args: list[tuple[str, str]],
        path: list[str]) -> Any:
    env = _env(container_id, netns, ifname, args, path)
    result: Any = None
    for plugin in conflist["plugins"]:
        result = _run("ADD", conflist, plugin, result, env, path)
    return result


def delete(conflist: dict[str, Any], container_id: str, netns: str, ifname: str, args: list[tuple[str, str]],
           path: list[str], prev: Any = None) -> None:
    env = _env(container_id, netns, ifname, args, path)
    errors = []
    for plugin in reversed(conflist["plugins"]):
        try:
            _run("DEL", conflist, plugin, prev, env, path)
        except PodrunError as exc:
            errors.append(str(exc))
    if errors:
        raise CNIError("; ".join(errors))


def addresses(result: Any) -> list[str]:
    """IPv4 addresses (without prefix) of a CNI result (0.4 and 1.0 layouts: ``ips``)."""
    out = []
    for ip in (result or {}).get("ips", []) if isinstance(result, dict) else []:
        addr = str(ip.get("address", "")).partition("/")[0]
        if addr and ":" not in addr:
            out.append(addr)
    return out


def dns(result: Any) -> dict[str, Any]:
    return dict(result.get("dns") or {}) if isinstance(result, dict) else {}
