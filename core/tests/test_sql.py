"""The SQL fragment type: each parameter stays with its piece, whatever the composition."""

from datetime import date

import pytest

from core.sql import SQL, all_of, name, names, sql, values, where_clause


def test_parameters_follow_their_placeholders_not_the_order_pieces_were_built_in():
    later = sql("day <= {high}", high=date(2025, 3, 31))
    earlier = sql("day >= {low}", low=date(2025, 3, 1))
    query = sql(
        "SELECT {columns} FROM {table} WHERE {where} AND country_id IN ({codes}) LIMIT {limit}",
        columns=names(["day", "views"], prefix="t."),
        table=name("t"),
        where=all_of([earlier, later]),
        codes=values(["DE", "FR"]),
        limit=10,
    )
    assert query.text == (
        "SELECT t.day, t.views FROM t WHERE day >= %s AND day <= %s "
        "AND country_id IN (%s, %s) LIMIT %s"
    )
    assert query.params == (date(2025, 3, 1), date(2025, 3, 31), "DE", "FR", 10)


def test_a_piece_used_twice_binds_its_values_twice():
    day = sql("coalesce(day, {fallback})", fallback="2025-01-01")
    query = sql("SELECT {day} FROM t GROUP BY {day}", day=day)
    assert query.text == "SELECT coalesce(day, %s) FROM t GROUP BY coalesce(day, %s)"
    assert query.params == ("2025-01-01", "2025-01-01")


def test_join_and_add_keep_text_and_parameters_together():
    parts = [sql("SELECT {a}", a=1), SQL("SELECT 2"), sql("SELECT {b}", b=3)]
    union = SQL(" UNION ALL ").join(parts) + sql(" LIMIT {n}", n=5)
    assert union == SQL("SELECT %s UNION ALL SELECT 2 UNION ALL SELECT %s LIMIT %s", (1, 3, 5))


def test_a_value_is_bound_never_pasted_into_the_text():
    query = sql("SELECT 1 WHERE title = {title}", title="x'; DROP TABLE t; --")
    assert query.text == "SELECT 1 WHERE title = %s"
    assert query.params == ("x'; DROP TABLE t; --",)


def test_no_conditions_is_true():
    assert all_of([]) == SQL("true")


@pytest.mark.parametrize(
    ("template", "pieces", "error"),
    [
        ("SELECT %s", {}, ValueError),  # a hand-written placeholder
        ("SELECT {missing}", {}, KeyError),
        ("SELECT {x!r}", {"x": 1}, KeyError),
    ],
)
def test_templates_that_would_misplace_a_parameter_are_refused(template, pieces, error):
    with pytest.raises(error):
        sql(template, **pieces)


@pytest.mark.parametrize("bad", ["t; DROP TABLE t", "t t", "", "1t", "a.b.c", '"t"'])
def test_names_must_be_identifiers(bad):
    with pytest.raises(ValueError):
        name(bad)


def test_an_empty_value_list_is_refused():
    with pytest.raises(ValueError):
        values([])


def test_a_where_clause_with_no_conditions_is_left_out():
    """Not ``WHERE true``: PostgreSQL plans a UNION ALL branch with any WHERE as a subquery."""
    assert where_clause([]) == SQL("")
    assert where_clause([sql("a = {a}", a=1)]) == SQL(" WHERE a = %s", (1,))
