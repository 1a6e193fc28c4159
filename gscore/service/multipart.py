"""A streaming multipart/form-data reader: file parts go straight to size-capped sinks, never to memory.

Starlette's form parser caps only the non-file parts and spools files with no total limit; this reader
counts every byte as it arrives and stops at the cap (a chunked upload cannot bypass it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from gscore.jobstore.storage import UploadSink, UploadTooLarge
from gscore.service.problems import Problem

MAX_FIELD_BYTES = 1024 * 1024
MAX_PARTS = 32
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # read (and drop) this much past the cap so the client sees the 413


@dataclass
class UploadedForm:
    """Text fields by name and, for each file field, its client file name and stored sink."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str | None, UploadSink]] = field(default_factory=dict)

    def discard(self) -> None:
        for _, sink in self.files.values():
            sink.discard()


class _Collector:
    def __init__(self, file_fields: set[str], open_sink: Callable[[], UploadSink]) -> None:
        self.form = UploadedForm()
        self.file_fields, self.open_sink = file_fields, open_sink
        self.header_name, self.header_value = b"", b""
        self.disposition = b""
        self.name: str | None = None
        self.filename: str | None = None
        self.buffer = bytearray()
        self.sink: UploadSink | None = None
        self.parts = 0
        self.ended = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Problem(
                400, "malformed-multipart", "Malformed multipart body", f"more than {MAX_PARTS} parts"
            )
        self.disposition, self.name, self.filename, self.sink = b"", None, None, None
        self.buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise Problem(
                400,
                "malformed-multipart",
                "Malformed multipart body",
                "a part has no Content-Disposition name",
            )
        self.name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self.name in self.form.files or self.name in self.form.fields:
            raise Problem(
                400,
                "malformed-multipart",
                "Malformed multipart body",
                f"field {self.name!r} was sent twice",
            )
        if self.name in self.file_fields:
            self.sink = self.open_sink()
            self.form.files[self.name] = (self.filename, self.sink)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.sink is not None:
            self.sink.write(data[start:end])
            return
        if len(self.buffer) + (end - start) > MAX_FIELD_BYTES:
            raise Problem(
                413,
                "field-too-large",
                "Form field too large",
                f"form field {self.name!r} exceeds {MAX_FIELD_BYTES} bytes",
            )
        self.buffer += data[start:end]

    def on_part_end(self) -> None:
        if self.sink is not None:
            self.sink.close()
        elif self.name is not None:
            self.form.fields[self.name] = self.buffer.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


async def read_multipart(
    request: Request, *, file_fields: set[str], open_sink: Callable[[], UploadSink]
) -> UploadedForm:
    """Parse the request body; file fields named in ``file_fields`` are streamed into sinks."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send multipart/form-data with a boundary",
        )
    collector = _Collector(file_fields, open_sink)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    stream = request.stream()
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except UploadTooLarge as exc:
        collector.form.discard()
        drained = 0
        async for chunk in stream:  # let the client finish sending so it reads our answer
            drained += len(chunk)
            if drained > DRAIN_LIMIT_BYTES:
                break
        raise Problem(
            413,
            "upload-too-large",
            "Upload too large",
            f"the upload exceeds the limit of {exc.limit} bytes (GSCORE_MAX_UPLOAD_BYTES)",
        ) from exc
    except MultipartParseError as exc:
        collector.form.discard()
        raise Problem(
            400, "malformed-multipart", "Malformed multipart body", str(exc) or "cannot parse"
        ) from exc
    except BaseException:
        collector.form.discard()
        raise
    if not collector.ended:
        collector.form.discard()
        raise Problem(
            400, "malformed-multipart", "Malformed multipart body", "the body ends before its boundary"
        )
    return collector.form
