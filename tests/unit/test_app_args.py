"""The image-and-app part of ``podrun run`` (``split_apps``) and how an app's environment is
merged (through ``build_manifest``, with an image resolver of the test's own): no root, no store."""

from __future__ import annotations

from pathlib import Path

import pytest

from podrun.errors import UsageError
from podrun.model.manifest import PodManifest
from podrun.stage0 import appflags as af
from podrun.stage0 import prepare


def split(*argv: str) -> list[tuple[str, dict[str, str], list[str], list[str], list[str] | None]]:
    return [(a.image, a.flags, a.environment, a.mounts, a.args) for a in af.split_apps(list(argv))]


def test_one_image() -> None:
    assert split("demo") == [("demo", {}, [], [], None)]


def test_app_flags_values_and_args() -> None:
    assert split("demo", "--exec", "/bin/sh", "--user=33", "--readonly-rootfs", "--", "-c", "echo --- x") == [
        ("demo", {"--exec": "/bin/sh", "--user": "33", "--readonly-rootfs": "True"}, [], [], ["-c", "echo --- x"])]


def test_repeated_flags_collect_and_bools_take_a_value() -> None:
    assert split("demo", "--environment", "A=1", "--environment=B=2", "--mount", "volume=v,target=/v",
                 "--no-new-privileges=false", "--readonly-rootfs=yes") == [
        ("demo", {"--no-new-privileges": "False", "--readonly-rootfs": "True"}, ["A=1", "B=2"],
         ["volume=v,target=/v"], None)]


def test_several_apps() -> None:
    assert split("a", "--name", "one", "---", "b", "--", "x", "---", "c", "--", "---", "d") == [
        ("a", {"--name": "one"}, [], [], None), ("b", {}, [], [], ["x"]), ("c", {}, [], [], []),
        ("d", {}, [], [], None)]


def test_empty_args_replace_the_command() -> None:
    assert split("demo", "--") == [("demo", {}, [], [], [])]  # [] (no Cmd) is not None (the image's)


def test_a_value_may_look_like_a_flag() -> None:
    assert split("demo", "--exec", "--", "--name", "x") == [("demo", {"--exec": "--", "--name": "x"}, [], [], None)]


@pytest.mark.parametrize(("argv", "message"), [
    ([], "no image given"),
    (["--exec", "/bin/sh"], "expected an image, got '--exec'"),
    (["demo", "--bogus"], "unknown app flag '--bogus' for image 'demo'"),
    (["demo", "extra"], "unknown app flag 'extra' for image 'demo'"),
    (["demo", "--exec"], "app flag --exec needs a value"),
    (["demo", "---"], "'---' must be followed by an image"),
    (["demo", "---", "--name", "x"], "expected an image, got '--name'"),
    (["demo", "--readonly-rootfs=maybe"], "invalid --readonly-rootfs value 'maybe': expected true or false"),
])
def test_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        af.split_apps(argv)
    assert str(caught.value) == message


# -- the environment: image < --set-env-file < --set-env < --environment -------------------------

def manifest(*argv: str, image_env: list[str] | None = None, **run: object) -> PodManifest:
    def resolve(name: str) -> prepare.ImageInfo:
        config: dict[str, object] = {"Cmd": ["/bin/sh"]}
        if image_env is not None:
            config["Env"] = image_env
        return prepare.ImageInfo("sha256:" + "a" * 64, name, {"config": config}, ("/nonexistent/layer",))

    req = prepare.RunRequest(apps=af.split_apps(list(argv)), net="none", **run)  # type: ignore[arg-type]
    return prepare.build_manifest(req, resolve)


def test_environment_precedence(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nA=file\nB=file\n\nC=file\n")
    m = manifest("demo", "--environment", "C=app", "--environment", "D=app", "---", "other",
                 image_env=["PATH=/img/bin", "A=image", "E=image"], set_env_file=str(env_file),
                 set_env=["B=flag", "C=flag"])
    first, second = (dict(e.split("=", 1) for e in app.env) for app in m.apps)
    assert first == {"PATH": "/img/bin", "A": "file", "E": "image", "B": "flag", "C": "app", "D": "app",
                     "container": "podrun"}
    assert second == {"PATH": "/img/bin", "A": "file", "E": "image", "B": "flag", "C": "flag", "container": "podrun"}


def test_environment_defaults_and_order() -> None:
    (app,) = manifest("demo", image_env=[]).apps
    assert app.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "container=podrun")
    (app,) = manifest("demo", "--environment", "container=other", "--environment", "Z=1",
                      image_env=["B=2", "A=1=x"]).apps
    # first-set order is kept; a later layer replaces a value in place; values may hold "="
    assert app.env == ("B=2", "A=1=x", "container=other", "Z=1",
                       "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


@pytest.mark.parametrize("entry", ["NOEQUALS", "=value"])
def test_a_bad_environment_entry_is_refused(entry: str) -> None:
    with pytest.raises(UsageError) as caught:
        manifest("demo", "--environment", entry)
    assert str(caught.value) == f"invalid environment entry {entry!r}: expected KEY=VALUE"
