"""Reading sersync's confxml.xml safely, byte for byte as sersync did.

sersync's tinyxml took attribute values (paths, module names, regexes) as raw bytes
whatever encoding the file declared; tutorials save the file as GBK, or as UTF-8 under
the stock ``encoding="ISO-8859-1"`` line. Declarations of types and entities are refused.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from .errors import ConfigError

_DECLARATION = re.compile(rb"\A\s*<\?xml[^>]*\?>")
# Read every file as ISO-8859-1, so each byte is one character, then turn attribute
# values back into bytes: sersync's tinyxml took paths byte for byte whatever the file
# declared, and tutorials save it as GBK or UTF-8 under the stock ISO-8859-1 line.
_AS_BYTES = b'<?xml version="1.0" encoding="ISO-8859-1"?>'


def _as_bytes_document(data: bytes, origin: str) -> bytes:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeError:
            raise ConfigError(f"{origin}: not valid UTF-16; save it as UTF-8") from None
    data = _DECLARATION.sub(b"", data.removeprefix(b"\xef\xbb\xbf"), count=1)
    return _AS_BYTES + data


def _fs_text(value: str) -> str:
    try:
        return os.fsdecode(value.encode("latin-1"))
    except UnicodeEncodeError:  # a character reference above U+00FF: already text
        return value


def read(data: bytes, origin: str) -> ET.Element:
    """The root element; attribute values hold the file's bytes as file names would."""
    data = _as_bytes_document(data, origin)
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise ConfigError(
            f"{origin}: has a <!DOCTYPE> or <!ENTITY> declaration, which trigsync refuses; "
            "sersync's confxml.xml needs none: remove it"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ConfigError(f"{origin}: not well-formed XML: {exc}") from None
    for elem in root.iter():
        elem.attrib = {key: _fs_text(value) for key, value in elem.attrib.items()}
    return root
