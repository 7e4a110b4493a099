"""Upload checks: the files of an upload request body, and each file checked and decoded.

A body is either multipart form data whose parts are all files in one named field
(`curl -F file=@cat.jpg`), or the image itself (`curl --data-binary @cat.jpg -H
'Content-Type: image/jpeg'`). The multipart body is parsed by python-multipart as it arrives,
in memory: no temporary files, and a body that breaks a limit is refused without reading on.
Only file parts are accepted: a text value is never treated as a file name or a URL.
"""

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from catsdogs.config import ImageLimits
from catsdogs.errors import TOO_LARGE, RefusedInput
from catsdogs.preprocessing import PreparedImage, image_statistics, prepare_image

# Content types of a body that is one image (any image/* type is accepted too).
RAW_IMAGE_TYPES = (b"application/octet-stream",)
# Part headers are a few hundred bytes in practice; more is not an upload from a browser,
# curl or an HTTP library.
MAX_PART_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    name: str = ""  # the client's file name, if it gave one


@dataclass(frozen=True)
class Upload:
    """A file that passed every check, decoded and preprocessed."""

    image: PreparedImage
    size_bytes: int
    # Drift features of the inputs (preprocessing.image_statistics), 0..1.
    brightness: float
    saturation: float


def usage(field_name: str) -> str:
    return (
        f"send the image as multipart form data in a field named '{field_name}' "
        f"(curl -F {field_name}=@photo.jpg ...), or as the request body with an image "
        f"content type (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' ...)"
    )


class UploadBody:
    """The files of one request body, fed chunk by chunk as it arrives.

    field_name: the form field that must hold the files; max_files: how many it may hold;
    max_bytes: the largest file. Raises RefusedInput as soon as the body breaks a rule.
    """

    def __init__(self, content_type: bytes, field_name: str, max_files: int, max_bytes: int):
        self.field_name = field_name
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.files: list[UploadedFile] = []
        media_type, options = parse_options_header(content_type)
        if media_type.startswith(b"image/") or media_type in RAW_IMAGE_TYPES:
            self._multipart = None
            self._raw = bytearray()
            return
        if media_type != b"multipart/form-data" or not options.get(b"boundary"):
            raise RefusedInput("not_multipart", f"no file uploaded: {usage(field_name)}")
        self._part = _Part()
        self._complete = False
        try:
            self._multipart = MultipartParser(
                options[b"boundary"],
                {
                    "on_header_field": self._add_header_name,
                    "on_header_value": self._add_header_value,
                    "on_header_end": self._end_header,
                    "on_headers_finished": self._start_file,
                    "on_part_data": self._add_data,
                    "on_part_end": self._end_file,
                    "on_end": self._end,
                },
            )
        except (FormParserError, ValueError) as error:
            raise _malformed(error) from None

    def feed(self, chunk: bytes) -> None:
        if self._multipart is None:
            self._raw += chunk
            self._check_size(len(self._raw), "the request body")
            return
        try:
            self._multipart.write(chunk)
        except FormParserError as error:
            raise _malformed(error) from None

    def finish(self) -> list[UploadedFile]:
        """The files, once the whole body has been fed."""
        if self._multipart is None:
            if self._raw:
                self.files.append(UploadedFile(bytes(self._raw)))
            self._raw = bytearray()
        elif not self._complete:
            raise RefusedInput(
                "bad_multipart", "the multipart body ends before its closing boundary"
            )
        if not self.files:
            raise RefusedInput("not_multipart", f"no file uploaded: {usage(self.field_name)}")
        return self.files

    def _add_header_name(self, data: bytes, start: int, end: int) -> None:
        self._part.add_header_bytes(self._part.header_name, data[start:end])

    def _add_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.add_header_bytes(self._part.header_value, data[start:end])

    def _end_header(self) -> None:
        part = self._part
        part.headers[bytes(part.header_name).lower()] = bytes(part.header_value)
        part.header_name.clear()
        part.header_value.clear()

    def _start_file(self) -> None:
        part = self._part
        disposition, options = parse_options_header(part.headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or name != self.field_name:
            raise RefusedInput(
                "wrong_field", f"form fields found: {name}; {usage(self.field_name)}"
            )
        if b"filename" not in options:
            # A text value, not a file: never read as a path or fetched as a URL.
            raise RefusedInput(
                "not_a_file",
                f"the field '{name}' holds text, not a file: {usage(self.field_name)}",
            )
        if len(self.files) >= self.max_files:
            raise RefusedInput(
                "too_many_files",
                f"more than {self.max_files} file(s) in one request; the limit is {self.max_files}",
                TOO_LARGE,
            )
        part.file_name = options[b"filename"].decode("utf-8", "replace")

    def _add_data(self, data: bytes, start: int, end: int) -> None:
        self._part.data += data[start:end]
        self._check_size(len(self._part.data), f"file {len(self.files) + 1}")

    def _end_file(self) -> None:
        self.files.append(UploadedFile(bytes(self._part.data), self._part.file_name))
        self._part = _Part()

    def _end(self) -> None:
        self._complete = True

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise RefusedInput(
                "too_large",
                f"{what} is over the limit of {self.max_bytes} bytes",
                TOO_LARGE,
            )


@dataclass
class _Part:
    """One part of a multipart body while it is being parsed."""

    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_bytes: int = 0
    data: bytearray = field(default_factory=bytearray)
    file_name: str = ""

    def add_header_bytes(self, buffer: bytearray, data: bytes) -> None:
        self.header_bytes += len(data)
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise RefusedInput("bad_multipart", "the headers of a multipart part are too long")
        buffer.extend(data)


def _malformed(error: Exception) -> RefusedInput:
    return RefusedInput("bad_multipart", f"the multipart body is malformed: {error}")


def read_upload(file: UploadedFile, image_size: int, limits: ImageLimits, name: str) -> Upload:
    """Check and preprocess one uploaded file; raises RefusedInput naming the file."""
    try:
        image = prepare_image(file.data, image_size, limits)
    except RefusedInput as error:
        raise RefusedInput(error.reason, f"{name}: {error}", error.status) from None
    # Computed here, on the decoding thread, rather than on the event loop.
    return Upload(image, len(file.data), *image_statistics(image.pixels))
