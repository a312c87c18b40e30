"""The base records schema: core columns, id = sha1("<bio_type>|<sequence.strip()>"), alphabets, metadata keys."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"
ID_HASH_SPEC = "sha1_utf8_pipe"
META_SCHEMA_VERSION = "usr:schema_version"
META_DATASET_CREATED_AT = "usr:dataset_created_at"
META_ID_HASH = "usr:id_hash"
META_REGISTRY_HASH = "usr:registry_hash"

META_OVERLAY_NAMESPACE = "usr:overlay_namespace"
META_OVERLAY_KEY = "usr:overlay_key"
META_OVERLAY_CREATED_AT = "usr:overlay_created_at"
META_NAMESPACE_CONTRACT_HASH = "usr:namespace_contract_hash"

CORE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("bio_type", pa.string()),
        ("sequence", pa.string()),
        ("alphabet", pa.string()),
        ("length", pa.int32()),
        ("source", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
CORE_COLUMNS = tuple(CORE_SCHEMA.names)

ALPHABETS: dict[str, str] = {
    "dna_4": "ACGT",
    "dna_5": "ACGTN",
    "rna_4": "ACGU",
    "rna_5": "ACGUN",
    "protein_20": "ACDEFGHIKLMNPQRSTVWY",
    "protein_21": "ACDEFGHIKLMNPQRSTVWY*",
}
ALPHABETS_BY_BIO_TYPE: dict[str, tuple[str, ...]] = {
    "dna": ("dna_4", "dna_5"),
    "rna": ("rna_4", "rna_5"),
    "protein": ("protein_20", "protein_21"),
}


def compute_id(bio_type: str, sequence: str) -> str:
    """sha1 hex of `"<bio_type>|<sequence.strip()>"` (UTF-8); case is preserved."""
    return hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()


def compute_ids(bio_types: pa.Array | pa.ChunkedArray, sequences: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Vectorized ids for already-stripped sequences (one sha1 per row; the join is done in Arrow)."""
    joined = pc.binary_join_element_wise(bio_types, sequences, "|")
    return pa.array(
        [hashlib.sha1(value.encode()).hexdigest() for value in joined.to_pylist()], type=pa.string()
    )


def count_wrong_ids(
    bio_types: pa.Array | pa.ChunkedArray,
    sequences: pa.Array | pa.ChunkedArray,
    ids: pa.Array | pa.ChunkedArray,
) -> int:
    """How many `ids` are not compute_id(bio_type, sequence), for already-stripped sequences.

    Compared in Python with compute_id's rule inlined (a call per row costs more than the sha1),
    and no Arrow array built from Python values (that would import pandas, see dataset/scan.py).
    """
    sha1 = hashlib.sha1
    given = zip(bio_types.to_pylist(), sequences.to_pylist(), ids.to_pylist(), strict=True)
    return sum(
        1 for bio_type, sequence, rid in given if sha1(f"{bio_type}|{sequence}".encode()).hexdigest() != rid
    )


def invalid_alphabet_mask(sequences: pa.Array | pa.ChunkedArray, alphabet: str) -> pa.Array:
    """True where a (stripped) sequence has a symbol outside `alphabet` (case-insensitive) or is empty."""
    symbols = "".join("\\" + ch if ch in "*" else ch for ch in ALPHABETS[alphabet])
    ok = pc.match_substring_regex(pc.utf8_upper(sequences), f"^[{symbols}]+$")
    return pc.or_kleene(pc.is_null(ok), pc.invert(ok))  # = invert(fill_null(ok, False)), no scalar


def base_metadata(created_at: str, registry_hash: str | None) -> dict[bytes, bytes]:
    """Parquet key/value metadata of records.parquet."""
    out = {
        META_SCHEMA_VERSION.encode(): SCHEMA_VERSION.encode(),
        META_DATASET_CREATED_AT.encode(): created_at.encode(),
        META_ID_HASH.encode(): ID_HASH_SPEC.encode(),
    }
    if registry_hash:
        out[META_REGISTRY_HASH.encode()] = registry_hash.encode()
    return out


def read_metadata(schema: pa.Schema) -> dict[str, str]:
    """A schema's key/value metadata as text."""
    return {
        k.decode(errors="replace"): v.decode(errors="replace") for k, v in (schema.metadata or {}).items()
    }


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_utc(moment: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file without pq.read_table, which imports pyarrow.dataset and pandas (seconds)."""
    with pq.ParquetFile(path) as handle:
        return handle.read(columns=columns)
