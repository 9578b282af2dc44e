"""Feed parsing (plain list, abuse.ch CSV, STIX 2.1) and indicator matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.intelligence.anomaly import IntelError
from bastion.intelligence.feeds import (
    FeedStore,
    IndicatorIndex,
    classify,
    parse_csv,
    parse_list,
    parse_stix,
)


def test_classify() -> None:
    assert classify("Evil.Example.") == ("domain", "evil.example")
    assert classify("*.evil.example") == ("domain", "evil.example")
    assert classify("198.51.100.7") == ("ip", "198.51.100.7")
    assert classify("198.51.100.0/24") == ("cidr", "198.51.100.0/24")
    assert classify("198.51.100.7/32") == ("ip", "198.51.100.7")
    assert classify("http://x.example/a/") == ("url", "http://x.example/a")
    assert classify("D41D8CD98F00B204E9800998ECF8427E")[0] == "hash"  # type: ignore[index]
    assert classify("not an indicator") is None and classify("") is None


def test_plain_list_and_hosts_file() -> None:
    items = parse_list("# comment\nevil.example\n0.0.0.0 ads.example # hosts\n\n10.9.0.0/16\n")
    assert [(i.kind, i.value) for i in items] == [
        ("domain", "evil.example"), ("domain", "ads.example"), ("cidr", "10.9.0.0/16")]


URLHAUS = """################################################################
# abuse.ch URLhaus Database Dump (CSV - recent URLs only)      #
# Last updated: 2026-11-01 14:02:09 (UTC)                      #
################################################################
# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
"3176364","2026-11-01 13:34:07","http://198.51.100.23:45623/i","online","2026-11-01 13:34:07","malware_download","32-bit,elf,mips,Mozi","https://urlhaus.abuse.ch/url/3176364/","geenensp"
"3176363","2026-11-01 13:33:05","https://dl.badfiles.example/x.exe","online","2026-11-01 13:33:05","malware_download","exe","https://urlhaus.abuse.ch/url/3176363/","abuse_ch"
"""  # noqa: E501

FEODO = """# Feodo Tracker
"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2026-10-01 10:00:00","203.0.113.50","443","online","2026-11-01","QakBot"
"""


def test_abuse_ch_csvs() -> None:
    items = parse_csv(URLHAUS)
    assert [i.value for i in items] == ["http://198.51.100.23:45623/i",
                                        "https://dl.badfiles.example/x.exe"]
    assert items[0].tags == ["malware_download", "32-bit,elf,mips,Mozi"]
    feodo = parse_csv(FEODO)
    assert [(i.kind, i.value, i.tags) for i in feodo] == [("ip", "203.0.113.50", ["QakBot"])]


def test_stix_bundle(tmp_path: Path) -> None:
    bundle = {"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--1",
         "pattern_type": "stix", "confidence": 80, "name": "C2",
         "indicator_types": ["malicious-activity"],
         "pattern": "[domain-name:value = 'c2.evil.example'] OR "
                    "[ipv4-addr:value = '192.0.2.0/28']"},
        {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",
         "pattern": "[file:hashes.'SHA-256' = '" + "b" * 64 + "']"},
        {"type": "indicator", "id": "indicator--3", "pattern_type": "stix", "revoked": True,
         "pattern": "[domain-name:value = 'revoked.example']"},
        {"type": "indicator", "id": "indicator--4", "pattern_type": "stix",
         "valid_until": "2020-01-01T00:00:00Z",
         "pattern": "[domain-name:value = 'expired.example']"},
        {"type": "indicator", "id": "indicator--5", "pattern_type": "sigma", "pattern": "x"},
        {"type": "malware", "id": "malware--1", "name": "not an indicator"},
    ]}
    items = parse_stix(json.dumps(bundle))
    assert [(i.kind, i.value) for i in items] == [
        ("domain", "c2.evil.example"), ("cidr", "192.0.2.0/28"), ("hash", "b" * 64)]
    assert items[0].confidence == 0.8 and "C2" in items[0].tags
    with pytest.raises(IntelError):
        parse_stix("{not json")


def test_index_matching() -> None:
    idx = IndicatorIndex(parse_list("evil.example\n192.0.2.0/28\n2001:db8::/32\n" + "c" * 40))
    hits = idx.match({"command": "wget https://a.b.evil.example/x; ping 192.0.2.9; "
                                 "curl [2001:db8::1]; echo " + "c" * 40,
                      "note": "notevil.example is fine, 192.0.2.99 too"})
    assert sorted(h.matched for h in hits) == sorted(
        ["a.b.evil.example", "192.0.2.9", "c" * 40])


def test_store_add_list_update_remove(tmp_path: Path) -> None:
    src = tmp_path / "block.txt"
    src.write_text("one.example\n")
    store = FeedStore(tmp_path / "feeds")
    assert store.add(src)["count"] == 1
    src.write_text("one.example\ntwo.example\n")
    assert store.update("block")[0]["count"] == 2
    assert store.update(str(src))[0]["count"] == 2
    assert store.index().count == 2 and store.list()[0]["name"] == "block"
    store.remove("block")
    assert store.list() == []
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(IntelError, match="no indicators"):
        store.add(tmp_path / "empty.txt")
