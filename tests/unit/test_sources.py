"""Raw-data importers on small inline samples: formats, structural errors, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recpipe.config import SOURCE_KINDS, ColumnMapping, DataParams
from recpipe.data.schema import EVENT_COLUMNS, read_tables, write_tables
from recpipe.data.sources import SOURCES, import_source
from recpipe.errors import DataImportError

# ---------------------------------------------------------------- helpers ---


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def check_events(tables, n: int) -> pd.DataFrame:
    ev = tables.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert len(ev) == n
    assert str(ev["timestamp"].dtype) == "datetime64[ns, UTC]"
    for col in ("user_id", "item_id", "event_type", "session_id"):
        assert ev[col].dtype == "string", col
    assert ev["value"].dtype == "float64"
    return ev


def raises(match: str):
    return pytest.raises(DataImportError, match=match)


# --------------------------------------------------------------- registry ---


def test_registry_covers_every_configured_kind():
    assert set(SOURCES) == set(SOURCE_KINDS)


def test_unknown_kind_names_the_known_ones(tmp_path):
    with raises(r"unknown data kind 'foo'; known: \[.*'movielens-100k'.*\]"):
        import_source("foo", tmp_path)


# ---------------------------------------------------------- movielens-100k ---

U_DATA = (
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
    "22\t377\t1\t878887116\n196\t302\t5\t881250950\n"
)
U_ITEM = (
    "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)"
    "|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "302|L.A. Confidential (1997)|01-Jan-1997||http://x|0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0\n"
    "377|Caf\xe9 au lait (1994)|||http://y|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
U_GENRE = (
    "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
    "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\n"
    "Romance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n"
)
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|T8H1N\n"


@pytest.fixture
def ml100k(tmp_path) -> Path:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", U_DATA)
    write(folder / "u.item", U_ITEM, encoding="latin-1")
    write(folder / "u.genre", U_GENRE)
    write(folder / "u.user", U_USER)
    return folder


def test_movielens_100k(ml100k):
    tables = import_source("movielens-100k", ml100k)
    ev = check_events(tables, 4)
    assert tables.source == "movielens-100k"
    assert {p.name for p in tables.input_files} == {"u.data", "u.item", "u.genre", "u.user"}
    assert ev["user_id"].tolist() == ["196", "186", "22", "196"]
    assert (ev["event_type"] == "rating").all()
    assert ev["value"].tolist() == [3.0, 3.0, 1.0, 5.0]
    assert ev["session_id"].isna().all()
    assert ev["timestamp"].iloc[0] == pd.Timestamp(881250949, unit="s", tz="UTC")

    items = tables.items.set_index("item_id")
    assert len(items) == 3
    assert items.loc["242", "categories"] == ["Comedy"]
    assert items.loc["302", "categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items.loc["377", "title"] == "Café au lait (1994)"  # latin-1 decoded
    assert items.loc["242", "release_year"] == 1997
    assert pd.isna(items.loc["377", "release_year"])
    assert items.loc["242", "url"].startswith("http://us.imdb.com")

    users = tables.users.set_index("user_id")
    assert users.loc["22", "zip_code"] == "T8H1N"
    assert users.loc["186", "zip_code"] == "00000"
    assert users.loc["196", "age"] == 49
    assert users.loc["186", "gender"] == "F"


def test_movielens_100k_parent_folder_and_default_genres(ml100k):
    (ml100k / "u.genre").unlink()
    tables = import_source("movielens-100k", ml100k.parent)  # the zip's parent folder
    assert tables.items.set_index("item_id").loc["242", "categories"] == ["Comedy"]


def test_movielens_100k_ratings_only(ml100k):
    (ml100k / "u.item").unlink()
    (ml100k / "u.user").unlink()
    tables = import_source("movielens-100k", ml100k)
    assert len(tables.events) == 4 and len(tables.items) == 0 and len(tables.users) == 0
    assert [p.name for p in tables.input_files] == ["u.data"]


def test_movielens_100k_missing_folder_names_expected_files(tmp_path):
    with raises(r"does not exist; expected a folder with u\.data"):
        import_source("movielens-100k", tmp_path / "nope")


def test_movielens_100k_missing_u_data(tmp_path):
    write(tmp_path / "u.item", U_ITEM, encoding="latin-1")
    with raises(r"no 'u\.data' in folder .*expected u\.data .*holds \['u\.item'\]"):
        import_source("movielens-100k", tmp_path)


def test_truncated_last_line_names_the_line(ml100k):
    write(ml100k / "u.data", U_DATA + "196\t24")
    with raises(r"u\.data' line 5 has 2 field\(s\), expected 4 tab-separated.*truncated"):
        import_source("movielens-100k", ml100k)


def test_row_with_extra_field_names_the_line(ml100k):
    lines = U_DATA.splitlines()
    lines[1] += "\t7"
    write(ml100k / "u.data", "\n".join(lines) + "\n")
    with raises(r"line 2 has 5 field\(s\), expected 4"):
        import_source("movielens-100k", ml100k)


def test_non_integer_id_names_line_and_value(ml100k):
    write(ml100k / "u.data", U_DATA.replace("22\t377", "u22\t377"))
    with raises(r"column 'user_id' has 1 value\(s\) that are not integer ids.*line 3: 'u22'"):
        import_source("movielens-100k", ml100k)


def test_non_numeric_rating_is_structural(ml100k):
    write(ml100k / "u.data", U_DATA.replace("\t1\t", "\tone\t"))
    with raises(r"column 'rating' has 1 value\(s\) that are not numbers.*line 3: 'one'"):
        import_source("movielens-100k", ml100k)


def test_utf16_file_is_rejected(ml100k):
    write(ml100k / "u.data", U_DATA, encoding="utf-16")
    with raises(r"u\.data' is UTF-16 encoded"):
        import_source("movielens-100k", ml100k)


def test_binary_file_is_rejected(ml100k):
    (ml100k / "u.data").write_bytes(b"\x00\x01\x02garbage\x00")
    with raises(r"contains NUL bytes.*binary or UTF-16"):
        import_source("movielens-100k", ml100k)


def test_zip_given_for_text_is_rejected(ml100k):
    (ml100k / "u.data").write_bytes(b"PK\x03\x04" + b"x" * 50)
    with raises(r"compressed archive or binary"):
        import_source("movielens-100k", ml100k)


def test_empty_file_is_rejected(ml100k):
    write(ml100k / "u.data", "")
    with raises(r"u\.data' is empty"):
        import_source("movielens-100k", ml100k)


def test_content_problems_survive_import(ml100k):
    """Negative / null ids, out-of-range ratings and duplicates are left for validation."""
    bad = U_DATA + "-5\t242\t7\t881250949\n\t242\t3\t881250949\n196\t242\t3\t881250949\n"
    write(ml100k / "u.data", bad)
    ev = check_events(import_source("movielens-100k", ml100k), 7)
    assert ev["user_id"].iloc[4] == "-5"
    assert ev["value"].iloc[4] == 7.0
    assert pd.isna(ev["user_id"].iloc[5])
    assert ev.iloc[[0, 6]].drop_duplicates().shape[0] == 1  # the duplicate is kept


# -------------------------------------------------------- movielens-latest ---


@pytest.fixture
def ml_latest(tmp_path) -> Path:
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,1445714835\n",
    )
    write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "5,Untitled,(no genres listed)\n",
    )
    write(
        tmp_path / "tags.csv",
        "userId,movieId,tag,timestamp\n2,1,pixar,1445714994\n2,1,fun,1445714996\n"
        '3,1,pixar,1445715000\n2,3,"politics, satire",1445715001\n2,9,orphan,1445715002\n',
    )
    return tmp_path


def test_movielens_latest(ml_latest):
    tables = import_source("movielens-latest", ml_latest)
    ev = check_events(tables, 3)
    assert ev["value"].tolist() == [4.0, 4.5, 0.5]
    assert (ev["event_type"] == "rating").all()
    items = tables.items.set_index("item_id")
    assert items.loc["1", "categories"] == [
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    ]
    assert items.loc["3", "title"] == "American President, The (1995)"
    assert items.loc["3", "release_year"] == 1995
    assert items.loc["5", "categories"] == []
    assert pd.isna(items.loc["5", "release_year"])
    assert items.loc["1", "tags"] == ["pixar", "fun"]
    assert items.loc["1", "text"] == "pixar, fun"
    assert items.loc["3", "tags"] == ["politics, satire"]
    assert pd.isna(items.loc["5", "text"])
    assert items.loc["9", "tags"] == ["orphan"]  # a tagged movie missing from movies.csv
    assert {p.name for p in tables.input_files} == {"ratings.csv", "movies.csv", "tags.csv"}


def test_movielens_latest_ratings_only(ml_latest):
    (ml_latest / "movies.csv").unlink()
    (ml_latest / "tags.csv").unlink()
    tables = import_source("movielens-latest", ml_latest)
    assert len(tables.events) == 3
    assert len(tables.items) == 0


def test_movielens_latest_missing_column_lists_found_columns(ml_latest):
    write(ml_latest / "ratings.csv", "userId,movieId,stars,timestamp\n1,1,4.0,964982703\n")
    with raises(r"lacks column 'rating'; columns found: \['userId', 'movieId', 'stars'"):
        import_source("movielens-latest", ml_latest)


def test_header_only_file_has_no_data_rows(ml_latest):
    write(ml_latest / "ratings.csv", "userId,movieId,rating,timestamp\n")
    with raises(r"ratings\.csv' has no data rows \(only a header\)"):
        import_source("movielens-latest", ml_latest)


def test_invalid_utf8_is_rejected(ml_latest):
    (ml_latest / "movies.csv").write_bytes(b"movieId,title,genres\n1,Caf\xe9,Drama\n")
    with raises(r"movies\.csv' is not valid UTF-8.*line 2"):
        import_source("movielens-latest", ml_latest)


# ------------------------------------------------------------------ yoochoose ---

CLICKS = (
    "1,2014-04-07T10:51:09.277Z,214536502,0\n"
    "1,2014-04-07T10:54:09.868Z,214536500,0\n"
    "2,2014-04-07T13:56:37.614Z,214662742,S\n"
    "2,2014-04-07T13:57:19.373Z,214662742,S\n"
    "3,2014-04-02T13:17:46.940Z,214716935,2053565\n"
)
BUYS = "2,2014-04-07T14:10:11.312Z,214662742,1046,2\n"


def test_yoochoose_folder_with_buys(tmp_path):
    write(tmp_path / "yoochoose-clicks.dat", CLICKS)
    write(tmp_path / "yoochoose-buys.dat", BUYS)
    tables = import_source("yoochoose", tmp_path)
    ev = check_events(tables, 6)
    assert ev["event_type"].tolist() == ["click"] * 5 + ["purchase"]
    assert ev["value"].tolist() == [1.0] * 5 + [2.0]  # quantity
    assert ev["user_id"].isna().all()
    assert ev["session_id"].tolist() == ["1", "1", "2", "2", "3", "2"]
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2014-04-07 10:51:09.277", tz="UTC")
    cats = tables.items.set_index("item_id")["categories"]
    assert cats["214662742"] == ["S"]
    assert cats["214716935"] == ["2053565"]
    assert cats["214536502"] == []  # category 0 = unknown
    assert set(tables.items["item_id"]) == set(ev["item_id"])
    assert [p.name for p in tables.input_files] == ["yoochoose-clicks.dat", "yoochoose-buys.dat"]


def test_yoochoose_clicks_file_only(tmp_path):
    clicks = write(tmp_path / "clicks.dat", CLICKS)
    write(tmp_path / "yoochoose-buys.dat", BUYS)
    tables = import_source("yoochoose", clicks)
    assert (tables.events["event_type"] == "click").all()


def test_yoochoose_without_any_category(tmp_path):
    clicks = write(tmp_path / "c.dat", "1,2014-04-07T10:51:09.277Z,5,0\n1,2014-04-07T10:52Z,6,0\n")
    items = import_source("yoochoose", clicks).items
    assert items["categories"].tolist() == [[], []]


def test_yoochoose_unparsable_timestamps_count_and_examples(tmp_path):
    bad = CLICKS.replace("2014-04-07T13:56:37.614Z", "yesterday").replace(
        "2014-04-02T13:17:46.940Z", "2014-13-45T99:00:00Z"
    )
    write(tmp_path / "yoochoose-clicks.dat", bad)
    with raises(r"2 unparsable value\(s\) in column 'timestamp'.*'yesterday'"):
        import_source("yoochoose", tmp_path)


def test_yoochoose_missing_clicks(tmp_path):
    write(tmp_path / "yoochoose-buys.dat", BUYS)
    with raises(r"no 'yoochoose-clicks\.dat'.*holds \['yoochoose-buys\.dat'\]"):
        import_source("yoochoose", tmp_path)


# ---------------------------------------------------------------- session-tsv ---

TSV_HEADER = "SessionId\tItemId\tTime\n"


def test_session_tsv_folder_rule(tmp_path):
    write(
        tmp_path / "x_train_full.txt",
        TSV_HEADER + "1\t10\t1396437466.94\n1\t11\t1396437467.5\n2\t10\t1396437500\n",
    )
    write(tmp_path / "x_train_tr.txt", TSV_HEADER + "1\t10\t1396437466.94\n1\t11\t1396437467.5\n")
    write(tmp_path / "x_train_valid.txt", TSV_HEADER + "2\t10\t1396437500\n")
    write(tmp_path / "x_test.txt", TSV_HEADER + "9\t10\t1396860669.277\n9\t11\t1396860886.998\n")
    write(tmp_path / "notes.md", "not data\n")
    tables = import_source("session-tsv", tmp_path)
    ev = check_events(tables, 5)  # train_full + test, no double counting
    assert [p.name for p in tables.input_files] == ["x_train_full.txt", "x_test.txt"]
    assert ev["session_id"].tolist() == ["1", "1", "2", "9", "9"]
    assert (ev["event_type"] == "click").all()
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2014-04-02 11:17:46.940", tz="UTC")
    assert ev["timestamp"].iloc[3] == pd.Timestamp("2014-04-07 08:51:09.277", tz="UTC")


def test_session_tsv_single_file_and_missing_column(tmp_path):
    f = write(tmp_path / "a.tsv", TSV_HEADER + "1\t10\t1396437466\n")
    assert len(import_source("session-tsv", f).events) == 1
    g = write(tmp_path / "b.tsv", "SessionId\tItemId\n1\t10\n")
    with raises(r"lacks column 'time'.*columns found: \['SessionId', 'ItemId'\]"):
        import_source("session-tsv", g)


def test_session_tsv_optional_user_and_event_type(tmp_path):
    f = write(
        tmp_path / "a.tsv",
        "SessionId\tItemId\tTime\tUserId\tEventType\n1\t10\t1396437466\tu1\tbuy\n"
        "1\t11\t1396437467\t\tzoom\n",
    )
    ev = import_source("session-tsv", f).events
    assert ev["user_id"].iloc[0] == "u1" and pd.isna(ev["user_id"].iloc[1])
    assert ev["event_type"].tolist() == ["purchase", "zoom"]


def test_session_tsv_comma_file_gets_a_hint(tmp_path):
    f = write(tmp_path / "a.txt", "SessionId,ItemId,Time\n1,10,1396437466\n")
    with raises(r"is the file tab-separated\?"):
        import_source("session-tsv", f)


def test_session_tsv_empty_folder(tmp_path):
    with raises(r"no \*\.txt or \*\.tsv file in folder"):
        import_source("session-tsv", tmp_path)


# ----------------------------------------------------------------- diginetica ---

VIEWS_SNAKE = (
    "session_id;user_id;item_id;timeframe;eventdate\n"
    "1;NA;81766;526309;2016-05-09\n"
    "1;NA;31331;1031018;2016-05-09\n"
    "2;7;32118;0;2016-05-10"  # no trailing newline, as in the real sample
)
PURCHASES = (
    "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n"
    "150;18278;17100868;2016-05-06;16421;25911\n"
    "1;NA;2000000;2016-05-09;16290;81766\n"
)
CATEGORIES = "itemId;categoryId\n81766;1096\n31331;1096\n32118;7\n25911;13\n"


@pytest.fixture
def digi(tmp_path) -> Path:
    write(tmp_path / "sample_train-item-views.csv", VIEWS_SNAKE)
    write(tmp_path / "train-purchases.csv", PURCHASES)
    write(tmp_path / "product-categories.csv", CATEGORIES)
    return tmp_path


def test_diginetica(digi):
    tables = import_source("diginetica", digi)
    ev = check_events(tables, 5)
    assert ev["event_type"].tolist() == ["view"] * 3 + ["purchase"] * 2
    assert pd.isna(ev["user_id"].iloc[0])
    assert ev["user_id"].iloc[2] == "7"
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2016-05-09", tz="UTC") + pd.Timedelta(
        milliseconds=526309
    )
    assert ev["session_id"].tolist() == ["1", "1", "2", "150", "1"]
    cats = tables.items.set_index("item_id")["categories"]
    assert cats["81766"] == ["1096"]
    assert len(tables.items) == 4


def test_diginetica_official_header_and_products(digi):
    (digi / "sample_train-item-views.csv").unlink()
    write(
        digi / "train-item-views.csv",
        VIEWS_SNAKE.replace(
            "session_id;user_id;item_id;timeframe;eventdate",
            "sessionId;userId;itemId;timeframe;eventdate",
        ),
    )
    write(digi / "products.csv", "itemId;pricelog2;product.name.tokens\n81766;5;4,5,6\n")
    tables = import_source("diginetica", digi)
    assert len(tables.events) == 5
    items = tables.items.set_index("item_id")
    assert items.loc["81766", "price_log2"] == 5.0
    assert items.loc["81766", "text"] == "4,5,6"
    assert items.loc["32118", "categories"] == ["7"]


def test_diginetica_truncated_last_line_without_newline(digi):
    write(digi / "sample_train-item-views.csv", VIEWS_SNAKE + "\n3;NA;999;12")
    with raises(r"line 5 has 4 field\(s\), expected 5 semicolon-separated.*truncated"):
        import_source("diginetica", digi)


def test_diginetica_purchases_only(tmp_path):
    write(tmp_path / "train-purchases.csv", PURCHASES)
    tables = import_source("diginetica", tmp_path)
    assert tables.events["event_type"].tolist() == ["purchase", "purchase"]
    assert len(tables.items) == 0


def test_diginetica_needs_views_or_purchases(tmp_path):
    write(tmp_path / "product-categories.csv", CATEGORIES)
    with raises(r"neither .*train-item-views\.csv.*expected"):
        import_source("diginetica", tmp_path)


def test_diginetica_non_integer_item(digi):
    write(digi / "sample_train-item-views.csv", VIEWS_SNAKE.replace("31331", "3l331"))
    with raises(r"column 'item_id' has 1 value\(s\) that are not integer ids.*line 3: '3l331'"):
        import_source("diginetica", digi)


# --------------------------------------------------------------- retailrocket ---


def test_retailrocket(tmp_path):
    write(
        tmp_path / "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,4000\n"
        "1433221999828,111016,wishlist,318965,\n",
    )
    write(
        tmp_path / "item_properties_part1.csv",
        "timestamp,itemid,property,value\n"
        "1435460400000,355908,categoryid,1173\n"
        "1441508400000,355908,available,1\n"
        "1431226800000,248676,categoryid,9\n",
    )
    write(
        tmp_path / "item_properties_part2.csv",
        "timestamp,itemid,property,value\n1433000000000,355908,categoryid,1174\n",
    )
    tables = import_source("retailrocket", tmp_path)
    ev = check_events(tables, 4)
    # the unknown spelling is kept for validation to report, not dropped
    assert ev["event_type"].tolist() == ["view", "cart", "purchase", "wishlist"]
    assert ev["user_id"].iloc[0] == "257597"
    assert ev["timestamp"].iloc[0] == pd.Timestamp(1433221332117, unit="ms", tz="UTC")
    cats = tables.items.set_index("item_id")["categories"]
    assert cats["355908"] == ["1173"]  # the latest value wins
    assert cats["248676"] == ["9"]
    assert len(tables.input_files) == 3


def test_retailrocket_event_type_map(tmp_path):
    f = write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid\n1,2,wishlist,3\n")
    opts = DataParams(source="retailrocket", event_type_map={"wishlist": "cart"})
    assert import_source("retailrocket", f, opts).events["event_type"].tolist() == ["cart"]


# ------------------------------------------------------------------------ csv ---


def csv_params(**kw) -> DataParams:
    return DataParams(source="csv", **kw)


def test_csv_default_mapping_with_iso_timestamps(tmp_path):
    f = write(
        tmp_path / "ev.csv",
        "user_id,item_id,timestamp,event_type,value,session_id\n"
        "u1,i1,2024-01-01T10:00:00Z,View,1,s1\n"
        "u1,i2,2024-01-01T12:00:00+02:00,add_to_cart,2.5,s1\n"
        ",i3,2024-01-01 10:00:00,teleport,1,\n",
    )
    tables = import_source("csv", f, csv_params())
    ev = check_events(tables, 3)
    assert ev["event_type"].tolist() == ["view", "cart", "teleport"]  # unknown kept
    assert ev["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
    ]
    assert pd.isna(ev["user_id"].iloc[2]) and pd.isna(ev["session_id"].iloc[2])
    assert ev["value"].tolist() == [1.0, 2.5, 1.0]
    assert tables.source == "csv" and tables.input_files == [f]


def test_csv_minimal_file_needs_no_configuration(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\na,x,2024-01-01\nb,y,2024-01-02\n")
    ev = check_events(import_source("csv", f), 2)
    assert (ev["event_type"] == "click").all()  # the default event type
    assert (ev["value"] == 1.0).all()
    assert ev["session_id"].isna().all()


def test_csv_custom_mapping_epoch_ms_and_separator(tmp_path):
    f = write(
        tmp_path / "ev.tsv",
        "visitor\tproduct\tts\taction\n7\t100\t1700000000123\tBUY\n8\t101\t1700000000456\tclick\n",
    )
    params = csv_params(
        columns=ColumnMapping(
            user_id="visitor",
            item_id="product",
            timestamp="ts",
            event_type="action",
            value=None,
            session_id=None,
        ),
        sep="\t",
        timestamp_unit="ms",
        default_event_type="view",
    )
    ev = check_events(import_source("csv", f, params), 2)
    assert ev["user_id"].tolist() == ["7", "8"]
    assert ev["event_type"].tolist() == ["purchase", "click"]
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20.123", tz="UTC")


def test_csv_no_event_type_column_uses_default(tmp_path):
    f = write(tmp_path / "ev.csv", "u,i,t\n1,2,1700000000\n")
    params = csv_params(
        columns=ColumnMapping(
            user_id="u", item_id="i", timestamp="t", event_type=None, value=None, session_id=None
        ),
        timestamp_unit="s",
        default_event_type="Purchases",
    )
    assert import_source("csv", f, params).events["event_type"].tolist() == ["purchase"]


def test_csv_renamed_optional_column_must_exist(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\na,x,2024-01-01\n")
    params = csv_params(columns=ColumnMapping(session_id="visit"))
    with raises(
        r"lacks column 'visit'; columns found: \['user_id', 'item_id', 'timestamp'\] "
        r"\(mapped to session_id\); set data.columns.session_id: null"
    ):
        import_source("csv", f, params)


def test_csv_default_names_spelled_out_are_still_optional(tmp_path):
    """params.yaml lists every default name; a source without sessions still imports."""
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\na,x,2024-01-01\n")
    mapping = ColumnMapping(
        user_id="user_id",
        item_id="item_id",
        timestamp="timestamp",
        event_type="event_type",
        value="value",
        session_id="session_id",
    )
    ev = import_source("csv", f, csv_params(columns=mapping)).events
    assert ev["session_id"].isna().all() and ev["event_type"].tolist() == ["click"]


def test_csv_missing_item_column(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,product,timestamp\na,x,2024-01-01\n")
    with raises(r"lacks column 'item_id'; columns found"):
        import_source("csv", f)


def test_csv_numeric_timestamps_without_unit_get_a_hint(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\na,x,1700000000\n")
    with raises(r"unparsable.*set data\.timestamp_unit"):
        import_source("csv", f)


def test_csv_unparsable_iso_timestamps(tmp_path):
    f = write(
        tmp_path / "ev.csv",
        "user_id,item_id,timestamp\na,x,2024-01-01\nb,y,not a date\nc,z,31/02/2024 25:00\n",
    )
    with raises(r"csv .*ev\.csv: 2 unparsable value\(s\) in column 'timestamp'.*'not a date'"):
        import_source("csv", f)


def test_csv_non_numeric_epoch(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\na,x,17000\nb,y,soon\n")
    with raises(r"column 'timestamp' has 1 value\(s\) that are not numbers.*line 3: 'soon'"):
        import_source("csv", f, csv_params(timestamp_unit="s"))


def test_csv_non_numeric_value(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,item_id,timestamp,value\na,x,2024-01-01,lots\n")
    with raises(r"column 'value' has 1 value\(s\) that are not numbers"):
        import_source("csv", f)


def test_csv_items_table(tmp_path):
    f = write(tmp_path / "ev.csv", "user_id,product,timestamp\na,1,2024-01-01\n")
    items = write(
        tmp_path / "items.csv", "product,title,categories,price\n1,Pen,office|school,2.5\n"
    )
    params = csv_params(columns=ColumnMapping(item_id="product"), items_path=str(items))
    tables = import_source("csv", f, params)
    row = tables.items.iloc[0]
    assert row["item_id"] == "1" and row["title"] == "Pen"
    assert row["categories"] == ["office", "school"]
    assert row["price"] == 2.5
    assert tables.input_files == [f, items]


def test_csv_folder_of_parts(tmp_path):
    write(tmp_path / "part-0.csv", "user_id,item_id,timestamp\na,x,2024-01-01\n")
    write(tmp_path / "part-1.csv", "user_id,item_id,timestamp\nb,y,2024-01-02\n")
    tables = import_source("csv", tmp_path)
    assert tables.events["user_id"].tolist() == ["a", "b"]


def test_csv_missing_file(tmp_path):
    with raises(r"csv: .*nope\.csv' does not exist"):
        import_source("csv", tmp_path / "nope.csv")


def test_csv_quoted_fields_and_bom(tmp_path):
    (tmp_path / "ev.csv").write_bytes(
        b'\xef\xbb\xbfuser_id,item_id,timestamp\n"a,1","x ""quoted""",2024-01-01\n'
    )
    ev = import_source("csv", tmp_path / "ev.csv").events
    assert ev["user_id"].tolist() == ["a,1"]
    assert ev["item_id"].tolist() == ['x "quoted"']


def test_csv_quoted_line_breaks(tmp_path):
    f = write(
        tmp_path / "ev.csv", 'user_id,item_id,timestamp\n"a\nb",x,2024-01-01\nc,y,2024-01-02\n'
    )
    assert import_source("csv", f).events["user_id"].tolist() == ["a\nb", "c"]


# -------------------------------------------------------------------- parquet ---


def test_parquet(tmp_path):
    frame = pd.DataFrame(
        {
            "uid": [1, 2, None],
            "iid": [10, 11, 12],
            "when": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-02 00:00"]),
            "kind": ["view", "transaction", "??"],
        }
    )
    path = tmp_path / "ev.parquet"
    frame.to_parquet(path)
    params = DataParams(
        source="parquet",
        columns=ColumnMapping(
            user_id="uid",
            item_id="iid",
            timestamp="when",
            event_type="kind",
            value=None,
            session_id=None,
        ),
    )
    tables = import_source("parquet", path, params)
    ev = check_events(tables, 3)
    assert ev["user_id"].tolist()[:2] == ["1", "2"] and pd.isna(ev["user_id"].iloc[2])
    assert ev["item_id"].tolist() == ["10", "11", "12"]
    assert ev["event_type"].tolist() == ["view", "purchase", "??"]
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 10:00", tz="UTC")
    assert tables.input_files == [path]


def test_parquet_epoch_and_missing_column(tmp_path):
    path = tmp_path / "ev.parquet"
    pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": [1700000000]}).to_parquet(path)
    ev = import_source("parquet", path, DataParams(source="parquet", timestamp_unit="s")).events
    assert ev["timestamp"].iloc[0] == pd.Timestamp(1700000000, unit="s", tz="UTC")
    with raises(r"holds numbers but no timestamp unit"):
        import_source("parquet", path, DataParams(source="parquet"))
    params = DataParams(source="parquet", columns=ColumnMapping(item_id="sku"))
    with raises(r"lacks column 'sku' \(mapped to item_id\); columns found"):
        import_source("parquet", path, params)


def test_parquet_not_a_parquet_file(tmp_path):
    f = write(tmp_path / "ev.parquet", "user_id,item_id\n")
    with raises(r"not readable as Parquet"):
        import_source("parquet", f)


# ------------------------------------------------------------------ round trip ---


def test_round_trip_through_parquet(ml100k, tmp_path):
    tables = import_source("movielens-100k", ml100k)
    out = tmp_path / "out"
    manifest = write_tables(tables, out)
    assert manifest["source"] == "movielens-100k"
    assert set(manifest["input_files"]) == {str(p) for p in tables.input_files}
    back = read_tables(out)
    pd.testing.assert_frame_equal(back.events, tables.events)
    assert back.source == "movielens-100k"
    cats = back.items.set_index("item_id")["categories"]
    assert list(cats["302"]) == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert back.users["zip_code"].tolist() == tables.users["zip_code"].tolist()


# ---------------------------------------------------------- user-sequences ---


def test_user_sequences_keep_each_users_order(tmp_path):
    path = tmp_path / "Video.txt"
    path.write_text("1 10\n1 11\n2 10\n1 12\n2 13\n")
    ev = check_events(import_source("user-sequences", path), 5)
    assert ev["user_id"].tolist() == ["1", "1", "2", "1", "2"]
    assert ev["timestamp"].is_monotonic_increasing  # the line number is the clock
    assert (ev["event_type"] == "click").all() and (ev["value"] == 1.0).all()
    folder = tmp_path / "seqs"
    folder.mkdir()
    (folder / "a.txt").write_text("1 10\n")
    (folder / "b.txt").write_text("1 11\n")
    both = import_source("user-sequences", folder).events
    assert both["item_id"].tolist() == ["10", "11"] and both["timestamp"].is_monotonic_increasing
    (tmp_path / "bad.txt").write_text("1 10\n1 x\n")
    with raises("bad.txt"):
        import_source("user-sequences", tmp_path / "bad.txt")
    (tmp_path / "empty").mkdir()
    with raises("no \\*.txt file"):
        import_source("user-sequences", tmp_path / "empty")
