-- convbill: convergent charging and billing inside PostgreSQL.
-- This script is built by the Makefile from the per-domain files in sql/ext/.

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION convbill" to load this file. \quit
