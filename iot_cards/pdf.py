"""A small PDF writer: one A4 page of text and lines, enough for an invoice a person can read.

Latin text uses the standard Helvetica font; Chinese text uses Adobe's standard CJK font
STSong-Light (UniGB-UCS2-H encoding), which PDF readers supply themselves, so nothing is
embedded and no font file or library is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

A4 = (595, 842)


def _latin(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})"


def _cjk(text: str) -> str:
    return "<" + text.encode("utf-16-be").hex().upper() + ">"


@dataclass
class Page:
    """Drawing commands of one page, in points from the bottom-left corner."""

    ops: list[str] = field(default_factory=list)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 10,
        bold: bool = False,
        colour: tuple[float, float, float] = (0, 0, 0),
    ) -> None:
        """Write text; runs of ASCII and of other characters each get their font."""
        r, g, b = colour
        self.ops.append(f"{r:.2f} {g:.2f} {b:.2f} rg BT {x:.1f} {y:.1f} Td")
        for run_ascii, run in _runs(text):
            font = ("F3" if bold else "F1") if run_ascii else "F2"
            shown = _latin(run) if run_ascii else _cjk(run)
            self.ops.append(f"/{font} {size:.1f} Tf {shown} Tj")
        self.ops.append("ET 0 0 0 rg")

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        width: float = 0.6,
        colour: tuple[float, float, float] = (0, 0, 0),
    ) -> None:
        r, g, b = colour
        self.ops.append(
            f"{r:.2f} {g:.2f} {b:.2f} RG {width:.2f} w {x1:.1f} {y1:.1f} m {x2:.1f} {y2:.1f} l S"
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        width: float = 0.8,
        colour: tuple[float, float, float] = (0, 0, 0),
    ) -> None:
        r, g, b = colour
        self.ops.append(
            f"{r:.2f} {g:.2f} {b:.2f} RG {width:.2f} w {x:.1f} {y:.1f} {w:.1f} {h:.1f} re S"
        )


def _runs(text: str) -> list[tuple[bool, str]]:
    runs: list[tuple[bool, str]] = []
    for char in text:
        is_ascii = char.isascii()
        if runs and runs[-1][0] == is_ascii:
            runs[-1] = (is_ascii, runs[-1][1] + char)
        else:
            runs.append((is_ascii, char))
    return runs


def render(page: Page, *, title: str) -> bytes:
    """The bytes of a one-page PDF document."""
    content = "\n".join(page.ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {A4[0]} {A4[1]}] /Contents 4 0 R"
            " /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 8 0 R >> >> >>"
        ).encode(),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H"
        b" /DescendantFonts [7 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >>"
        b" /FontDescriptor 9 0 R /DW 1000 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6"
        b" /FontBBox [-25 -254 1000 880] /ItalicAngle 0 /Ascent 880 /Descent -120"
        b" /CapHeight 880 /StemV 93 >>",
        b"<< /Title " + _cjk(title).encode() + b" /Producer (Flowbill) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)
