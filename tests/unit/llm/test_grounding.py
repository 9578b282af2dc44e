"""Argument grounding: values the request gives, options it names, parameters it mentions."""

from __future__ import annotations

from typing import Any

from bastion.llm._constrained import _as_declared, choose, fill, fill_schema
from bastion.llm._grounding import (
    anchored_names,
    counted,
    date_format,
    dates,
    doc_options,
    formatted_dates,
    name_mention,
    named_values,
    number_candidates,
    numbers,
    payloads,
    polarity,
    word_stems,
)
from bastion.messages import Message, ToolSpec
from tests.fakes.prims import Prims


def spec(props: dict[str, Any], required: list[str], name: str = "tool") -> ToolSpec:
    return ToolSpec(name, "", {"type": "object", "properties": props, "required": required})


def test_numbers_read_money_percent_scale_and_words() -> None:
    assert numbers("a villa within $300,000 to $400,000") == [[300000], [400000]]
    assert numbers("revenue of $1M in 2019 and $1.2M in 2020") == [
        [1000000], [2019], [1200000], [2020]
    ]  # fmt: skip
    assert numbers("a rate of 3% for 5 years") == [[3, 0.03], [5]]
    assert numbers("cash flows of -$100, $40") == [[-100], [40]]
    assert numbers("charges of 1e-9 and 2.5E+3") == [[1e-09], [2500]]
    assert numbers("twenty-one apples, five pears and a dozen eggs") == [[21], [5], [12]]
    # metres and kelvin are not thousands or millions
    assert numbers("dropped from 100 m, a 100m sprint") == [[100], [100]]
    assert numbers("at 298K") == [[298, 298000]]
    assert numbers("2.5k users, 3 billion") == [[2500], [3000000000]]
    # ordinals and "second" are not quantities
    assert numbers("the second one") == [[1]]
    assert number_candidates("3.5 and 4 and 3%", integer=True) == [4, 3]
    assert number_candidates("3.5 and 4", integer=False) == [3.5, 4]


def test_named_values_prefer_whole_phrases_in_request_order() -> None:
    q = "Find me a nature park that allows camping and has scenic views in Boston"
    assert named_values(["Camping", "Scenic View", "Trails", "Picnic Areas"], q) == [
        "Camping",
        "Scenic View",
    ]
    lessons = ["Guitar Lessons", "Violin Lessons", "Piano Lessons"]
    assert named_values(lessons, "a guitar shop that offers violin lessons") == ["Violin Lessons"]
    # no whole phrase: options at least half of whose words occur
    assert named_values(["Disabled Access", "Cafe Inside"], "a library for disabled people") == [
        "Disabled Access"
    ]
    assert named_values(["asc", "desc"], "sort it in ascending order") == ["asc"]
    assert named_values(["Trails"], "weather in Oslo") == []


def test_doc_options_are_the_quoted_choices() -> None:
    doc = "The temperature unit ('Celsius' or 'Fahrenheit'). Default is \"Fahrenheit\"."
    assert doc_options(doc) == ["Celsius", "Fahrenheit", "Fahrenheit"]


def test_name_mention_and_polarity() -> None:
    tool = set(word_stems("forest_growth_forecast"))
    q = "Predict forest growth in Yellowstone for 5 years including human impact."
    at = name_mention("include_human_impact", q, tool)
    assert at >= 0 and polarity(q, at) is True
    q2 = "Predict forest growth in Yellowstone without the human impact."
    assert polarity(q2, name_mention("include_human_impact", q2, tool)) is False
    # a typo'd or inflected word still counts; generic words need not occur
    assert name_mention("acceleration", "an acceleeration of 9.8", set()) >= 0
    assert name_mention("allow_transfer", "by train, and you can transfer", set()) >= 0
    assert name_mention("standardize", "Also apply standardization.", set()) >= 0
    # the tool's own subject is no evidence for an option
    assert name_mention("forest_type", "forest growth", tool) == -1
    assert name_mention("unit", "weather in Oslo", set()) == -1


def test_fill_schema_grounds_each_kind_of_argument() -> None:
    s = spec(
        {
            "price": {"type": "number"},
            "years": {"type": "integer"},
            "monthly": {"type": "boolean"},
            "include_tax": {"type": "boolean"},
            "unit": {"type": "string", "description": "'km' or 'miles'. Default 'km'."},
            "features": {"type": "array", "items": {"type": "string", "enum": ["Pool", "Garage"]}},
            "style": {"type": "string", "enum": ["modern", "classic"]},
            "rates": {"type": "array", "items": {"type": "number"}},
        },
        ["price", "years", "rates"],
    )
    q = "Price of $250,000 for 4.5 years, in miles, with a garage, excluding tax"
    out = fill_schema(s, q)
    props = out["properties"]
    assert props["price"]["enum"] == [250000, 4.5]
    assert props["years"]["enum"] == [250000]  # integers only
    assert props["rates"]["items"]["enum"] == [250000, 4.5]
    assert props["rates"]["maxItems"] == 2
    assert props["unit"]["enum"] == ["miles"]  # the documented choice the request names
    assert props["features"] == {"const": ["Garage"]}
    assert props["include_tax"] == {"const": False}  # mentioned, negated
    assert "monthly" not in props and "style" not in props  # not mentioned: left out
    # mentioned optional arguments must be filled
    assert set(out["required"]) == {"price", "years", "rates", "unit", "features", "include_tax"}
    # no numbers in the request: numbers stay free
    assert "enum" not in fill_schema(s, "price for some years")["properties"]["price"]
    # numbers from this turn's tool results count too
    assert fill_schema(s, "price it", context="list price: 99")["properties"]["price"]["enum"] == [
        99
    ]


def test_numbers_are_returned_as_declared() -> None:
    schema = {
        "type": "object",
        "properties": {
            "xs": {"type": "array", "items": {"type": "number"}},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
        },
    }
    got = _as_declared({"xs": [1, 2.5], "n": 3, "x": 4, "ok": True, "extra": 1}, schema)
    assert got == {"xs": [1.0, 2.5], "n": 3, "x": 4.0, "ok": True, "extra": 1}
    assert isinstance(got["xs"][0], float) and isinstance(got["n"], int)


async def test_a_tool_needing_numbers_the_request_lacks_is_not_called() -> None:
    area = spec(
        {"base": {"type": "number"}, "height": {"type": "number"}}, ["base", "height"], "area"
    )
    msgs = [Message("user", "what is the area of a triangle?")]
    # the model and the words both point at the tool, but no base or height is given
    p = Prims(scores=[0.0, -5.0])
    assert (await choose(p, msgs, [area], "auto"))[0] == "none"
    msgs = [Message("user", "what is the area of a triangle with base 3 and height 4?")]
    assert (await choose(p, msgs, [area], "auto"))[0] == "area"
    # asked for by name or required: called anyway (the model fills what it can)
    assert (await choose(p, [Message("user", "area?")], [area], "required"))[0] == "area"
    assert (await choose(p, [Message("user", "area?")], [area], "area"))[0] == "area"


def test_percentages_follow_the_parameter_docs() -> None:
    q = "an annual rate of 5% for 3 years"
    assert number_candidates(q, integer=False) == [0.05, 3]  # a fraction by default
    assert number_candidates(q, integer=False, doc="The rate as a percentage.") == [5, 3]
    assert number_candidates(q, integer=False, doc="as a decimal. E.g. 5% = 0.05") == [0.05, 3]
    assert number_candidates(q, integer=True) == [5, 3]  # an integer can only be 5


def test_dates_are_written_in_the_documented_format() -> None:
    assert dates("closing March.11, 2022 or on 1st of May 2020") == [(2022, 3, 11), (2020, 5, 1)]
    assert dates("London 2022/08/16, then 12/25/2021") == [(2022, 8, 16), (2021, 12, 25)]
    assert date_format("Format: yyyy-mm-dd.") == "%Y-%m-%d"
    assert date_format("The date (month-day-year) you want") == "%m-%d-%Y"
    assert date_format("in the format of MM-DD-YYY.") == "%m-%d-%Y"
    assert date_format("The date to look up.") is None
    s = spec({"date": {"type": "string", "description": "Date, format dd/mm/yyyy."}}, ["date"])
    assert fill_schema(s, "prices on January 2, 2021")["properties"]["date"]["enum"] == [
        "02/01/2021"
    ]
    assert formatted_dates("on January 2, 2021", "Any date.") == []  # no format: words copied


async def test_a_value_given_once_is_not_used_twice() -> None:
    s = spec(
        {"case": {"type": "string"}, "county": {"type": "string"}, "paid": {"type": "number"}},
        ["case", "county", "paid"],
    )
    msgs = [Message("user", "record for case CA123456 in San Diego County, paid $200")]
    p = Prims(
        completions=[
            '{"case": "CA123456", "county": "CA123456", "paid": 200}',
            '{"case": "CA123456", "county": "San Diego County", "paid": 200}',
        ]
    )
    args, _ = await fill(p, msgs, s)
    assert args == {"case": "CA123456", "county": "San Diego County", "paid": 200.0}
    again = p.schemas[-1]["properties"]  # type: ignore[index]
    assert again["case"] == {"const": "CA123456"} and again["paid"] == {"const": 200}
    assert "San Diego" in again["county"]["enum"]
    assert not [c for c in again["county"]["enum"] if "CA123456" in c]  # nor spans around it
    # a value the request gives twice may be used twice: no second fill
    msgs = [Message("user", "from 5 to 5 and case X5 in Y")]
    two = spec({"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"])
    p = Prims(completions=['{"a": 5, "b": 5}'])
    assert (await fill(p, msgs, two))[0] == {"a": 5, "b": 5} and len(p.schemas) == 1


def test_payloads_are_quoted_phrases_and_what_follows_a_colon() -> None:
    assert payloads("ping kim: don't forget the keys") == ["don't forget the keys"]
    assert payloads("make todo.txt with 'water the plants' in it") == ["water the plants"]
    assert payloads("Note pour plus tard : rappeler le garagiste") == ["rappeler le garagiste"]
    # to the end, and to the end of the first sentence
    assert payloads("tell sam: dinner at 8. Bring wine.") == [
        "dinner at 8. Bring wine.", "dinner at 8.",
    ]  # fmt: skip
    # a time or a web address is no hand-over
    assert payloads("on 2027-08-21 at 18:00, see https://example.org") == []


def test_anchored_names_are_the_words_next_to_what_they_name() -> None:
    assert anchored_names("repo", "show the last 10 commits of the infra repo", set()) == [
        "infra"
    ]
    assert anchored_names("repo", "sync the website repo with the remote", set()) == ["website"]
    # a generic parameter name ("name") is anchored by a word of the tool's name
    tool = set(word_stems("container_restart"))
    assert anchored_names("name", "the home assistant container needs a kick", tool) == [
        "home assistant"
    ]
    assert anchored_names("title", "a note called Passwords policy: rotate keys", set()) == [
        "Passwords policy"
    ]
    # part of a proper name, or introducing one: no anchor
    assert anchored_names("league", "Manchester United in the Premier League", set()) == []
    assert anchored_names("player_name", "stats of basketball player LeBron James", set()) == []
    # the capitalised part of a run; no bare numbers
    assert anchored_names("cuisine", "places that offer Chinese cuisine", set()) == ["Chinese"]
    assert anchored_names("match_format", "Kohli for past 10 matches", set()) == []


def test_counted_numbers_are_in_what_the_parameter_counts() -> None:
    assert counted("count", "How many commits.", "show me the last 3 commits")
    assert counted("brightness", "Brightness in percent, 1-100.", "dim the hall to 30%")
    assert counted("days", "", "for the next seven days")
    assert not counted("count", "How many commits.", "on 2027-08-21 at 18:00")
    # a word of the tool's own name is not a unit
    assert not counted("offset", "Line of the file to start at.", "the biggest 5 files",
                       set(word_stems("read_file")))  # fmt: skip


def test_fill_schema_passes_on_what_the_request_hands_over() -> None:
    notes = spec({"title": {"type": "string"}, "text": {"type": "string"}}, ["text"])
    props = fill_schema(notes, "save a note called Passwords policy: rotate keys")["properties"]
    assert props["text"]["enum"] == ["rotate keys"]
    # without a hand-over the text stays free
    assert "enum" not in fill_schema(notes, "write down that the boiler is fixed")["properties"][
        "text"
    ]
    # a quoted phrase is one value: not 'fence'
    todo = spec({"item": {"type": "string"}}, ["item"])
    spans = fill_schema(todo, "I did 'fix the fence', mark it done")["properties"]["item"]["enum"]
    assert "fix the fence" in spans and "fence" not in spans and "the fence" not in spans
    # a parameter documented as a path takes no quoted phrase ("Path of the repository.")
    commit = spec(
        {"repo": {"type": "string", "description": "Path of the repository.", "default": "."},
         "message": {"type": "string"}},
        ["message"],
    )  # fmt: skip
    props = fill_schema(commit, "commit with message 'update docs'")["properties"]
    assert "repo" not in props and props["message"]["enum"] == ["update docs"]
    # a number of what an optional count counts: mentioned, so filled
    log = spec({"count": {"type": "integer", "description": "How many commits."}}, [])
    assert fill_schema(log, "show me the last 3 commits")["properties"]["count"]["enum"] == [3]
    assert fill_schema(log, "show me the commits")["properties"] == {}


class _Meaning:
    """A stand-in embedder's verdict: fixed cosines per option text (tests/fakes would be
    overkill for one table)."""

    def __init__(self, sims: dict[str, float]) -> None:
        self.sims = sims

    def similarities(self, query: str, texts: list[str]) -> list[float]:
        return [self.sims.get(t, 0.0) for t in texts]


def test_an_enum_value_meant_but_not_named_is_taken_when_it_stands_out() -> None:
    from bastion.llm._constrained import _ground

    device = {"type": "string", "enum": ["living_room_tv", "kitchen_speaker"]}
    clear = _Meaning({"living room tv": 0.52, "kitchen speaker": 0.20})
    grounded, said = _ground("device", device, {}, "watch it on the TV", "", set(), clear, 0.12)  # type: ignore[arg-type]
    assert grounded["enum"] == ["living_room_tv"] and said
    # no value stands out: the model picks among them all, and the argument is not mentioned
    close = _Meaning({"living room tv": 0.30, "kitchen speaker": 0.25})
    grounded, said = _ground("device", device, {}, "play it", "", set(), close, 0.12)  # type: ignore[arg-type]
    assert grounded is device and not said
    # a value named by its words wins over meaning
    grounded, _ = _ground("device", device, {}, "on the kitchen speaker", "", set(), clear, 0.12)  # type: ignore[arg-type]
    assert grounded["enum"] == ["kitchen_speaker"]
