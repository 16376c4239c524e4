"""The pg_catalog reader of table shapes gives exactly what SQLAlchemy's reflection gives.

Verify reads shapes through `pg_catalog` on PostgreSQL (about half of reflection's time); a shape
that differed from the reflected one would be drift reported where there is none, or drift
missed. Both readers run here over every kind of column, default, constraint and index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from dbinit_pipeline.database.catalog import reflect_live
from dbinit_pipeline.database.providers.pg_catalog import read_shapes
from dbinit_pipeline.database.providers.postgresql import PostgresProvider
from dbinit_pipeline_tests.conftest import PgServer, unique_name

DDL = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE parent (
  id serial PRIMARY KEY,
  code varchar(10) UNIQUE,
  a integer, b integer,
  UNIQUE (a, b)
);
CREATE TABLE kinds (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  s smallint DEFAULT 3,
  i integer NOT NULL DEFAULT 0,
  big bigint,
  n numeric(10, 2) DEFAULT 1.5,
  n2 numeric,
  r real,
  d double precision,
  bo boolean DEFAULT true NOT NULL,
  t text COLLATE "C",
  vc varchar(20) DEFAULT 'x'::character varying,
  vcn varchar,
  ch char(3),
  dt date DEFAULT CURRENT_DATE,
  ts timestamp DEFAULT now(),
  ts3 timestamp(3) with time zone DEFAULT CURRENT_TIMESTAMP,
  tm time,
  tmz time with time zone,
  iv interval,
  ivd interval day to second(2),
  u uuid,
  j json,
  jb jsonb DEFAULT '{}'::jsonb,
  raw bytea,
  arr integer[],
  tarr text[][],
  ip inet,
  net cidr,
  mac macaddr,
  bits bit(4),
  vbits bit varying(8),
  tsv tsvector,
  gen integer GENERATED ALWAYS AS (i * 2) STORED,
  pa integer, pb integer,
  code varchar(10),
  FOREIGN KEY (pa, pb) REFERENCES parent (a, b) ON DELETE CASCADE,
  CONSTRAINT kinds_code_fk FOREIGN KEY (code) REFERENCES parent (code),
  CONSTRAINT kinds_pair UNIQUE (pb, pa)
);
CREATE INDEX ix_kinds_multi ON kinds (big DESC, i);
CREATE UNIQUE INDEX ux_kinds_u ON kinds (u);
CREATE UNIQUE INDEX ux_kinds_pair_again ON kinds (pb, pa);
CREATE INDEX ix_kinds_expr ON kinds (lower(t), i);
CREATE INDEX ix_kinds_partial ON kinds (dt) WHERE bo;
CREATE INDEX ix_kinds_incl ON kinds (s) INCLUDE (r);
CREATE TABLE selfref (id integer PRIMARY KEY, parent_id integer REFERENCES selfref (id));
CREATE TABLE no_columns ();
CREATE TABLE with_named_types (id integer PRIMARY KEY, m mood, p positive, ms mood[]);
"""
TABLES = ["parent", "kinds", "selfref", "no_columns", "with_named_types"]


@pytest.fixture
def scratch(pg: PgServer) -> Iterator[Connection]:
    name = unique_name("shapes")
    with pg.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(
        make_url(pg.url).set(drivername="postgresql+psycopg", database=name), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(DDL))
            conn.commit()
            yield conn
    finally:
        engine.dispose()
        pg.drop(name)


def test_catalog_reader_matches_reflection(scratch: Connection) -> None:
    reflected = reflect_live(scratch, TABLES)
    read = read_shapes(scratch, [*TABLES, "no_such_table"])
    # Enums and domains are left to reflection; every other table is read from the catalog.
    assert read.fallback == {"with_named_types"}
    assert set(read.shapes) == set(TABLES) - {"with_named_types"}
    for table, shape in read.shapes.items():
        assert shape == reflected[table], table
    assert PostgresProvider().describe_live(scratch, TABLES) == reflected
    # Spot checks that the comparison is not vacuous.
    kinds = read.shapes["kinds"]
    assert kinds.primary_key == ("id",)
    assert (("pa", "pb"), "parent", ("a", "b")) in kinds.foreign_keys
    assert ("pb", "pa") in kinds.unique
    assert (("big", "i"), False) in kinds.indexes and (("u",), True) in kinds.indexes
    assert {c.name: c.default for c in kinds.columns}["gen"] is None
    assert read.shapes["no_columns"].columns == ()


def test_catalog_reader_sees_what_changed(scratch: Connection) -> None:
    scratch.execute(
        text("ALTER TABLE kinds DROP COLUMN tsv, ALTER COLUMN vcn TYPE text, ALTER COLUMN s SET NOT NULL")
    )
    scratch.execute(text("DROP INDEX ix_kinds_multi"))
    scratch.execute(text("ALTER TABLE selfref DROP CONSTRAINT selfref_parent_id_fkey"))
    scratch.commit()
    read = read_shapes(scratch, TABLES)
    assert read.shapes == {t: s for t, s in reflect_live(scratch, TABLES).items() if t in read.shapes}
    kinds = {c.name: c for c in read.shapes["kinds"].columns}
    assert "tsv" not in kinds and kinds["vcn"].type == "TEXT" and kinds["s"].nullable is False
    assert (("big", "i"), False) not in read.shapes["kinds"].indexes
    assert read.shapes["selfref"].foreign_keys == frozenset()
