"""The OpenAPI document at ``/ogc/openapi``: pygeoapi's, corrected to what we serve.

pygeoapi 0.21 builds the document from its configuration (:func:`pygeoapi.openapi.get_oas`)
and knows nothing of what our routes (:mod:`api.ogc.features`) accept beyond its own
parameters.  :func:`describe` edits the document it made, once per ``API``:

- ``limit`` as a shared parameter with its maximum, where QGIS 3.22 reads the page size
  (it looks only at ``components.parameters.limit``; pygeoapi writes ``limit`` inside each
  items path, so QGIS fell back to 100 per page);
- on every items path of a published collection: ``cursor`` (the keyset of our ``next``
  links), ``filter``, ``filter-lang`` (cql2-text, cql2-json), ``filter-crs``; ``sortby``
  described here (pygeoapi refers to a file on raw.githubusercontent.com); ``datetime``
  described here, for every collection with time (pygeoapi lists it only for those with
  a configured temporal extent and refers to schemas.opengis.net for it);
- ``crs`` and ``bbox-crs`` with the CRS URIs served (:data:`layers.features.CRSES`);
- the routes :data:`api.auth.GUARDED` keeps for a role (running ``detect-changes``, the
  list of every job): a bearer token, and their 401 and 403 problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layers import cql2
from layers import features as engine

REF = "#/components/parameters/{}"
ITEMS = "/collections/{}/items"


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "style": "form",
            "explode": False, "description": description, "schema": schema}


def parameters() -> dict[str, dict[str, Any]]:
    """The shared parameters this module declares (``components.parameters``)."""
    crs_uris = [c.uri for c in engine.CRSES]
    filter_crses = sorted(cql2.FILTER_CRS)
    return {
        "limit": _query(
            "limit", f"Features per page, at most {engine.MAX_LIMIT:,} (more is read as the "
            "maximum); follow the next link for the rest.",
            {"type": "integer", "minimum": 1, "maximum": engine.MAX_LIMIT,
             "default": engine.DEFAULT_LIMIT}),
        "cursor": _query(
            "cursor", "Where a page starts, as the `next` link of the page before gives it "
            "(with its `offset`): an opaque token of the sort values and id of the last "
            "feature, read with the index, so deep pages are as fast as the first.  Valid "
            "only with the `sortby` it was made for; a cursor whose position is not the "
            "`offset` given is ignored.",
            {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}),
        "filter": _query(
            "filter", "A CQL2 filter (OGC API - Features Part 3) in `filter-lang`: "
            "comparison, LIKE, IN, BETWEEN, IS NULL, CASEI, S_INTERSECTS, S_DISJOINT, "
            "S_CONTAINS, S_WITHIN, S_EQUALS, S_TOUCHES, S_CROSSES, S_OVERLAPS, "
            "S_DWITHIN(geometry, geometry, distance, units) in metres, the T_ operators; "
            "over the collection's queryables.  An unknown property or function, or more "
            f"than {cql2.MAX_DEPTH} levels or {cql2.MAX_FILTER_CHARS:,} characters: 400.",
            {"type": "string", "maxLength": cql2.MAX_FILTER_CHARS}),
        "filter-lang": _query(
            "filter-lang", "The language of `filter` (cql2-text by default).",
            {"type": "string", "enum": list(engine.FILTER_LANGS),
             "default": engine.FILTER_LANGS[0]}),
        "filter-crs": _query(
            "filter-crs", "The CRS of the geometries in `filter` (CRS84 by default), read "
            "in that CRS's own axis order.",
            {"type": "string", "format": "uri", "enum": filter_crses,
             "default": cql2.CRS84_URI}),
        "sortby": _query(
            "sortby", f"Up to {engine.MAX_SORT_KEYS} queryables, comma-separated, each "
            "with `+` (ascending, the default) or `-` (descending); the id breaks ties; "
            "nulls sort last.",
            {"type": "array", "minItems": 1, "maxItems": engine.MAX_SORT_KEYS,
             "items": {"type": "string", "pattern": r"^[+-]?[A-Za-z_][A-Za-z0-9_]*$"}}),
        "datetime": _query(
            "datetime", "An RFC 3339 date, date-time or interval (`start/end`, `..` or "
            "empty for an open end): sensors by `installed_on`, grid levels by their "
            "generation's validity.",
            {"type": "string"}),
        "crs": _query(
            "crs", "The CRS of the answer's coordinates, in its own axis order (CRS84 by "
            "default).", {"type": "string", "format": "uri", "enum": crs_uris,
                          "default": engine.CRS84_URI}),
        "bbox-crs": _query(
            "bbox-crs", "The CRS of `bbox`, in its own axis order (CRS84 by default).",
            {"type": "string", "format": "uri", "enum": crs_uris,
             "default": engine.CRS84_URI}),
    }


# what each items path lists by reference, in this order, after pygeoapi's own
ITEMS_PARAMETERS = ("cursor", "filter", "filter-lang", "filter-crs")


def describe(openapi: dict[str, Any], catalog: Mapping[str, engine.Collection] | None
             ) -> None:
    """Edit pygeoapi's ``openapi`` document (in place) to describe what the items paths of
    the collections in ``catalog`` accept (see the module notes)."""
    shared = openapi.setdefault("components", {}).setdefault("parameters", {})
    shared.update(parameters())
    for name, coll in (catalog or {}).items():
        get = openapi.get("paths", {}).get(ITEMS.format(name), {}).get("get")
        if get is None:
            continue
        listed = get.setdefault("parameters", [])
        kept = []
        for p in listed:
            ref = p.get("$ref", "")
            if ref.endswith(("/sortby.yaml", "/parameters/datetime")):
                continue  # described here instead of in a file elsewhere
            kept.append(p)
        wanted = ["sortby", *ITEMS_PARAMETERS]
        if coll.temporal:
            wanted.insert(1, "datetime")
        kept += [{"$ref": REF.format(p)} for p in wanted]
        listed[:] = kept
    guarded(openapi)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"type": "object"}}}}


def guarded(openapi: dict[str, Any]) -> None:
    """A bearer token on each operation the guard keeps for a role, with its 401 (no
    token, or a bad one) and 403 (a token without the role) answers."""
    from api.auth import GUARDED

    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault("bearer", {"type": "http", "scheme": "bearer",
                                  "description": "a token of POST /api/v1/login, or the "
                                  "session cookie of the phone pages"})
    for (method, path), role in GUARDED.items():
        op = openapi.get("paths", {}).get(path.removeprefix("/ogc"), {}).get(method.lower())
        if op is None:
            continue
        op["security"] = [{"bearer": []}]
        responses = op.setdefault("responses", {})
        responses["401"] = _problem("no token or session, or one that is not valid")
        responses["403"] = _problem(f"signed in, but not as {role}")
