"""Docker references and ``signedIdentity`` rules of containers-policy.json(5), as
containers/image's ``docker/reference`` and ``signature/policy_reference_match.go`` decide them
(podrun.trust.policy parses the rules; decide applies them).

Identities are compared in the fully expanded Docker form (``busybox`` is
``docker.io/library/busybox``), with the grammar and normalisation of ``ParseNormalizedNamed``,
reproduced by :func:`parse_normalized` (podrun's own name parser, podrun.image.reference, does
not map ``index.docker.io`` and refuses an upper-case registry name).
"""

from __future__ import annotations

import re

from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from podrun.image.reference import DockerReference

# --- Docker references, as containers/image's docker/reference (distribution's grammar) -------

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST_PATTERN = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({DIGEST_PATTERN}))?")
_DOMAIN_RE = re.compile(_DOMAIN)
DOMAIN_NAME_RE = re.compile(_DOMAIN_NAME)
_NAME_RE = re.compile(_NAME)
_DOMAIN_PREFIX_RE = re.compile(rf"{_DOMAIN}/")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's algorithms
NAME_MAX = 255


class Named(Record):
    """A parsed Docker reference: ``name`` (``domain/path``) with an optional tag and digest."""

    name: Final[str]
    tag: Final[str | None]
    digest: Final[str | None]

    __slots__ = ("name", "tag", "digest")

    def __init__(self, name: str, tag: str | None, digest: str | None) -> None:
        self.name = name
        self.tag = tag
        self.digest = digest

    @property
    def name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse(text: str) -> Named:
    """docker/reference's ``Parse``: the grammar, the name length, a supported digest."""
    m = _REFERENCE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"invalid reference format {text!r}")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_MAX:
        raise ValueError(f"repository name {name!r} longer than {NAME_MAX} characters")
    if digest is not None:
        algorithm, _, hexpart = digest.partition(":")
        if len(hexpart) != _DIGEST_HEX.get(algorithm) or not re.fullmatch(r"[a-f0-9]+", hexpart):
            raise ValueError(f"invalid digest {digest!r}")
    return Named(name, tag, digest)


def parse_normalized(text: str) -> Named:
    """``ParseNormalizedNamed``: expand Docker Hub short names (``busybox`` ->
    ``docker.io/library/busybox``, ``index.docker.io`` -> ``docker.io``); no default tag is added.
    A first component is a registry when it has a ``.`` or ``:``, is ``localhost``, or has an
    upper-case letter.  Raises ValueError."""
    if _IDENTIFIER_RE.fullmatch(text):
        raise ValueError(f"{text!r}: a 64-hex-digit image ID is not a repository name")
    first, slash, rest = text.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = "docker.io", text
    else:
        domain, remainder = first, rest
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder
    repository = remainder.partition(":")[0]
    if repository.lower() != repository:
        raise ValueError(f"repository name {repository!r} must be lowercase")
    return parse(f"{domain}/{remainder}")


def parse_canonical(text: str) -> Named:
    """``ParseNamed``: *text* must already be in the fully expanded form.  Raises ValueError."""
    named = parse_normalized(text)
    if str(named) != text:
        raise ValueError(f"{text!r} is not in the fully expanded form ({named})")
    return named


def image_named(image: DockerReference) -> Named:
    """The image's identity in the normalized form (podrun's parser does not map ``index.docker.io``)."""
    return parse_normalized(str(image))


# --- signedIdentity ----------------------------------------------------------------------------


class IdentityRule(Record):
    """A ``signedIdentity``: does a signature's ``docker-reference`` name this image?"""

    TYPE = ""
    __slots__ = ()

    def matches(self, image: DockerReference, signature_ref: str) -> bool:
        """True when the signature's claimed identity is acceptable for *image*; a claim that is
        not a valid reference never matches."""
        try:
            return self._matches(image_named(image), parse_normalized(signature_ref))
        except ValueError:
            return False

    def _matches(self, image: Named, signed: Named) -> bool:
        raise NotImplementedError

    def to_json(self) -> dict[str, str]:
        return {"type": self.TYPE}

    def describe(self) -> str:
        return self.TYPE


def _repo_digest_or_exact(image: Named, signed: Named) -> bool:
    if signed.name_only:
        return False
    if image.tag is not None:  # also with a digest: the whole reference must be equal
        return str(signed) == str(image)
    if image.digest is not None:  # the digest itself is checked against the manifest
        return signed.name == image.name
    return False


class MatchRepoDigestOrExact(IdentityRule):
    TYPE = "matchRepoDigestOrExact"
    __slots__ = ()

    def _matches(self, image: Named, signed: Named) -> bool:
        return _repo_digest_or_exact(image, signed)


class MatchExact(IdentityRule):
    TYPE = "matchExact"
    __slots__ = ()

    def _matches(self, image: Named, signed: Named) -> bool:
        return not image.name_only and not signed.name_only and str(signed) == str(image)


class MatchRepository(IdentityRule):
    TYPE = "matchRepository"
    __slots__ = ()

    def _matches(self, image: Named, signed: Named) -> bool:
        return signed.name == image.name


class ExactReference(IdentityRule):
    TYPE = "exactReference"
    docker_reference: Final[str]
    __slots__ = ("docker_reference",)

    def __init__(self, docker_reference: str) -> None:
        self.docker_reference = docker_reference

    def _matches(self, image: Named, signed: Named) -> bool:
        wanted = parse_normalized(self.docker_reference)
        return not wanted.name_only and not signed.name_only and str(signed) == str(wanted)

    def to_json(self) -> dict[str, str]:
        return {"type": self.TYPE, "dockerReference": self.docker_reference}

    def describe(self) -> str:
        return f"{self.TYPE} {self.docker_reference}"


class ExactRepository(IdentityRule):
    TYPE = "exactRepository"
    docker_repository: Final[str]
    __slots__ = ("docker_repository",)

    def __init__(self, docker_repository: str) -> None:
        self.docker_repository = docker_repository

    def _matches(self, image: Named, signed: Named) -> bool:
        return signed.name == parse_normalized(self.docker_repository).name

    def to_json(self) -> dict[str, str]:
        return {"type": self.TYPE, "dockerRepository": self.docker_repository}

    def describe(self) -> str:
        return f"{self.TYPE} {self.docker_repository}"


class RemapIdentity(IdentityRule):
    """An image under ``prefix`` is expected to be signed as the same name under
    ``signed_prefix``; then ``matchRepoDigestOrExact``.  Prefixes compare with the image's fully
    expanded name, whole components only (``a.com/x`` is not a prefix of ``a.com/xy``)."""

    TYPE = "remapIdentity"
    prefix: Final[str]
    signed_prefix: Final[str]
    __slots__ = ("prefix", "signed_prefix")

    def __init__(self, prefix: str, signed_prefix: str) -> None:
        self.prefix = prefix
        self.signed_prefix = signed_prefix

    def remap(self, image: Named) -> Named:
        """*image* with its prefix replaced, or unchanged when the prefix does not apply; raises
        ValueError when the result is not a canonical reference."""
        if image.name != self.prefix and not image.name.startswith(self.prefix + "/"):
            return image
        return parse_canonical(self.signed_prefix + str(image)[len(self.prefix) :])

    def _matches(self, image: Named, signed: Named) -> bool:
        return _repo_digest_or_exact(self.remap(image), signed)

    def to_json(self) -> dict[str, str]:
        return {"type": self.TYPE, "prefix": self.prefix, "signedPrefix": self.signed_prefix}

    def describe(self) -> str:
        return f"{self.TYPE} {self.prefix} -> {self.signed_prefix}"


def valid_remap_prefix(text: str) -> bool:
    """containers/image's check of a remapIdentity prefix: ``host[:port]``, or a name that starts
    with an explicit ``host[:port]/`` (no tag, no digest, no wildcard)."""
    return bool(_DOMAIN_RE.fullmatch(text) or (_NAME_RE.fullmatch(text) and _DOMAIN_PREFIX_RE.match(text)))
