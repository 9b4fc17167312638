#!/usr/bin/env python3
"""Writes the synthetic sample data in sample_data/ (deterministic; re-run to regenerate).

Every person is invented. Fødselsnummer are Tenor-style synthetic numbers (month + 80) with valid
control digits; D-numbers add 40 to the day as well. Never put real people's data here.

bergen/vigilo/  OneRoster 1.1 JSON as exported by Vigilo, two snapshots (2026-01-15, 2026-02-05),
                3 schools, 300 pupils. The story pupils (see README.md here) are:
                  V-NY       new in the second snapshot (10A at 46550)
                  V-SLUTTA   left: in the first snapshot only
                  V-FLYTTA   moved from 46550 to 46551 (7th grade)
                  V-NAMN     changed family name
                  V-DNR      D-number replaced by a fødselsnummer (same sourcedId)
                  V-UGYLDIG  bad control digit in both snapshots (never published; avvik)
voss/vigo/      Vigo elevliste per school, Windows-1252, hand-made faults.
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(4601)

W1 = [3, 7, 6, 1, 8, 9, 4, 5, 2]
W2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2]


def control(digits):
    k1 = 11 - sum(w * d for w, d in zip(W1, digits)) % 11
    k1 = 0 if k1 == 11 else k1
    if k1 == 10:
        return None
    k2 = 11 - sum(w * d for w, d in zip(W2, digits + [k1])) % 11
    k2 = 0 if k2 == 11 else k2
    if k2 == 10:
        return None
    return k1, k2


def tenor_fnr(year, month, day, dnr=False, used=set()):
    """A Tenor synthetic number (month + 80) born on the date, valid control digits."""
    while True:
        individ = rng.randint(500, 999)  # 2000-2039
        dd = day + (40 if dnr else 0)
        s = f"{dd:02d}{month + 80:02d}{year % 100:02d}{individ:03d}"
        c = control([int(x) for x in s])
        if c and s not in used:
            used.add(s)
            return s + f"{c[0]}{c[1]}"


def orgnr(prefix):
    w = [3, 2, 7, 6, 5, 4, 3, 2]
    for tail in range(100000):
        s = f"{prefix}{tail:05d}"[:8]
        k = 11 - sum(a * int(b) for a, b in zip(w, s)) % 11
        k = 0 if k == 11 else k
        if k != 10:
            return s + str(k)


FORNAVN = ["Ingrid", "Ola", "Kari", "Sindre", "Åse", "Bjørn", "Solveig", "Eirik", "Marte", "Håkon",
           "Sigrid", "Torbjørn", "Ragnhild", "Øystein", "Liv", "Jørgen", "Tuva", "Even", "Maja",
           "Aksel", "Hedda", "Vetle", "Ylva", "Brage", "Frøya", "Tiril", "Sølve", "Embla", "Odin"]
MELLOMNAVN = ["Marie", "Johan", "Elise", "Andreas", "Sofie", None, None, None, None, None, None]
ETTERNAVN = ["Fjellheim", "Nordbø", "Strandvik", "Brekkestø", "Lysefjord", "Haugland", "Myrvang",
             "Skogrand", "Sætervik", "Øvrebø", "Kvamsdal", "Lindås", "Vossestrand", "Tveitane",
             "Rølvåg", "Bjørkedal", "Solheimsvik", "Grønås", "Hammersvoll", "Åsvang"]

# ---------------------------------------------------------------- Bergen (OneRoster JSON)
BERGEN_SCHOOLS = [
    ("46550", "Fjellsida skule", "Fjellsida skule"),
    ("46551", "Sjøkanten skule", "Sjøkanten skule"),
    ("46552", "Lyngheia skule", "Lyngheia skule"),
]


def pupil(sid, grade, school, year_end=2026, dnr=False):
    year = (year_end - 6) - grade
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    fn = rng.choice(FORNAVN)
    return {
        "sid": sid, "grade": grade, "school": school,
        "fnr": tenor_fnr(year, month, day, dnr=dnr),
        "birth": (year, month, day),
        "given": fn, "middle": rng.choice(MELLOMNAVN), "family": rng.choice(ETTERNAVN),
    }


def bergen():
    pupils = []
    n = 0
    for skole, _, _ in BERGEN_SCHOOLS:
        for grade in range(1, 11):
            for _ in range(10):
                n += 1
                pupils.append(pupil(f"V-{n:05d}", grade, skole))
    # Story pupils replace regular ones so the total stays 300 in the first snapshot.
    story = {
        "V-SLUTTA": pupil("V-SLUTTA", 9, "46550"),
        "V-FLYTTA": pupil("V-FLYTTA", 7, "46550"),
        "V-NAMN": pupil("V-NAMN", 10, "46551"),
        "V-DNR": pupil("V-DNR", 10, "46552", dnr=True),
        "V-UGYLDIG": pupil("V-UGYLDIG", 8, "46552"),
    }
    bad = story["V-UGYLDIG"]["fnr"]
    story["V-UGYLDIG"]["fnr"] = bad[:10] + str((int(bad[10]) + 1) % 10)
    pupils = pupils[: 300 - len(story)] + list(story.values())
    snap1 = [dict(p) for p in pupils]

    snap2 = []
    for p in pupils:
        q = dict(p)
        if q["sid"] == "V-SLUTTA":
            continue
        if q["sid"] == "V-FLYTTA":
            q["school"] = "46551"
        if q["sid"] == "V-NAMN":
            q["family"] = "Bergslien"
        if q["sid"] == "V-DNR":
            y, m, d = q["birth"]
            q["fnr"] = tenor_fnr(y, m, d, dnr=False)
        snap2.append(q)
    snap2.append(pupil("V-NY", 10, "46550"))
    return snap1, snap2


def oneroster_files(pupils, date, modified):
    ref = lambda kind, sid: {"href": f"https://vigilo.example/ims/oneroster/v1p1/{kind}s/{sid}",
                             "sourcedId": sid, "type": kind}
    orgs = [{"sourcedId": "bergen", "status": "active", "dateLastModified": modified,
             "name": "Bergen kommune", "type": "district", "identifier": "310478717",
             "children": [ref("org", f"org-{s}") for s, _, _ in BERGEN_SCHOOLS]}]
    for i, (s, navn, _) in enumerate(BERGEN_SCHOOLS):
        org = {"sourcedId": f"org-{s}", "status": "active", "dateLastModified": modified,
               "name": navn, "type": "school", "parent": ref("org", "bergen"),
               "metadata": {"skolenummer": s, "eierform": "kommunal"}}
        # Vigilo's export has been seen with the misspelled key.
        org["identfier" if i == 2 else "identifier"] = orgnr(f"31{i}4")
        orgs.append(org)
    sessions = [{"sourcedId": "as-2026", "status": "active", "dateLastModified": modified,
                 "title": "2025/2026", "type": "schoolYear", "startDate": "2025-08-01",
                 "endDate": "2026-07-31", "schoolYear": "2026"}]
    classes = []
    for s, _, _ in BERGEN_SCHOOLS:
        for g in range(1, 11):
            classes.append({"sourcedId": f"cls-{s}-{g}A", "status": "active",
                            "dateLastModified": modified, "title": f"{g}A", "classCode": f"{g}A",
                            "classType": "homeroom", "grades": [f"{g:02d}"],
                            "course": ref("course", f"trinn-{g}"), "school": ref("org", f"org-{s}"),
                            "terms": [ref("academicSession", "as-2026")]})
        classes.append({"sourcedId": f"cls-{s}-MAT10", "status": "active", "dateLastModified": modified,
                        "title": "Matematikk 10", "classType": "scheduled", "grades": ["10"],
                        "course": ref("course", "mat"), "school": ref("org", f"org-{s}"),
                        "terms": [ref("academicSession", "as-2026")]})
    users, enrollments = [], []
    for i, p in enumerate(pupils):
        u = {"sourcedId": p["sid"], "status": "active", "dateLastModified": modified,
             "enabledUser": True, "username": p["sid"].lower(),
             "userIds": [{"type": "Feide", "identifier": f"{p['sid'].lower()}@bergen.kommune.no"}],
             "givenName": p["given"], "familyName": p["family"],
             "email": f"{p['sid'].lower()}@skule.bergen.kommune.no"}
        if p["middle"]:
            u["middleName"] = p["middle"]
        if i % 25 == 7:
            u["identfier"] = p["fnr"]  # Vigilo's misspelling
        else:
            u["identifier"] = p["fnr"]
        if i % 40 == 3:  # a few users in the 1.2 shape
            u["roles"] = [{"roleType": "primary", "role": "student", "org": ref("org", f"org-{p['school']}")}]
            u["primaryOrg"] = ref("org", f"org-{p['school']}")
        else:
            u["role"] = "student"
            u["orgs"] = [ref("org", f"org-{p['school']}")]
        users.append(u)
        cls = f"cls-{p['school']}-{p['grade']}A"
        enrollments.append({"sourcedId": f"enr-{p['sid']}-{cls}", "status": "active",
                            "dateLastModified": modified, "user": ref("user", p["sid"]),
                            "class": ref("class", cls), "school": ref("org", f"org-{p['school']}"),
                            "role": "student", "beginDate": "2025-08-18"})
        if p["grade"] == 10:
            enrollments.append({"sourcedId": f"enr-{p['sid']}-mat", "status": "active",
                                "dateLastModified": modified, "user": ref("user", p["sid"]),
                                "class": ref("class", f"cls-{p['school']}-MAT10"),
                                "school": ref("org", f"org-{p['school']}"), "role": "student"})
    users.append({"sourcedId": "T-001", "status": "active", "dateLastModified": modified,
                  "enabledUser": True, "role": "teacher", "givenName": "Lærar", "familyName": "Testesen",
                  "orgs": [ref("org", "org-46550")], "username": "t001", "userIds": []})
    out = os.path.join(HERE, "bergen", "vigilo")
    os.makedirs(out, exist_ok=True)
    for name, key, items in [("users", "users", users), ("orgs", "orgs", orgs),
                             ("classes", "classes", classes), ("enrollments", "enrollments", enrollments),
                             ("academicSessions", "academicSessions", sessions)]:
        with open(os.path.join(out, f"{name}-{date}.json"), "w", encoding="utf-8") as f:
            json.dump({key: items}, f, ensure_ascii=False, indent=1)
            f.write("\n")


# ---------------------------------------------------------------- Voss (Vigo CSV)
def voss():
    out = os.path.join(HERE, "voss", "vigo")
    os.makedirs(out, exist_ok=True)

    def kull(n, skole):
        rows = []
        for i in range(n):
            p = pupil(f"{skole}-{i}", 10, skole, year_end=2027)
            navn = " ".join(x for x in [p["given"], p["middle"], p["family"]] if x)
            klasse = "10A" if i % 2 == 0 else "10B"
            rows.append([p["fnr"], navn, klasse])
        return rows

    a = kull(24, "46520")
    b = kull(18, "46521")
    header = "Kommunenummer;Skolenummer;Fylkesnummer;Klasse;Fødselsnummer;Elev_namn"

    def line(skole, r, fnr=None, trailing=False, quote=False):
        f = fnr if fnr is not None else r[0]
        navn = f'"{r[1]}"' if quote else r[1]
        s = f"4621;{skole};46;{r[2]};{f};{navn}"
        return s + (";" if trailing else "")

    # A leading zero lost: make one pupil born on the 5th and drop the zero as a spreadsheet does.
    z = pupil("zero", 10, "46520", year_end=2027)
    while z["birth"][2] > 9:
        z = pupil("zero", 10, "46520", year_end=2027)
    a[3] = [z["fnr"], f"{z['given']} {z['family']}", "10B"]
    bad = a[5][0][:10] + str((int(a[5][0][10]) + 3) % 10)  # bad control digit

    lines_a = [header]
    for i, r in enumerate(a):
        if i == 3:
            lines_a.append(line("46520", r, fnr=r[0].lstrip("0")))
        elif i == 5:
            lines_a.append(line("46520", r, fnr=bad))
        elif i == 8:
            lines_a.append(line("46520", r, fnr=f"{r[0][:6]} {r[0][6:]}", quote=True))
        else:
            lines_a.append(line("46520", r, trailing=(i % 4 == 1)))
        if i == 10:
            lines_a.append("")  # an empty line
        if i == 12:
            lines_a.append(line("46520", r))  # a duplicate line
    lines_b = [header] + [line("46521", r, trailing=True) for r in b]

    # Two weeks later 46520 sends a new list: one pupil left, one arrived, one changed class.
    a2 = [r for i, r in enumerate(a) if i != 20]
    a2[14] = [a2[14][0], a2[14][1], "10A" if a2[14][2] == "10B" else "10B"]
    n = pupil("ny", 10, "46520", year_end=2027)
    a2.append([n["fnr"], f"{n['given']} {n['family']}", "10A"])
    lines_a2 = [header] + [line("46520", r) for r in a2]  # the school fixed both numbers

    for name, lines in [("elevliste_46520_20261101.csv", lines_a),
                        ("elevliste_46521_20261101.csv", lines_b),
                        ("elevliste_46520_20261115.csv", lines_a2)]:
        with open(os.path.join(out, name), "wb") as f:
            f.write(("\r\n".join(lines) + "\r\n").encode("cp1252"))


if __name__ == "__main__":
    s1, s2 = bergen()
    oneroster_files(s1, "2026-01-15", "2026-01-14T22:00:00Z")
    oneroster_files(s2, "2026-02-05", "2026-02-04T22:00:00Z")
    voss()
