"""The world: regions, facilities, doctors, duty rosters, pharmacies, drugs and catalogues.

Everything here is built once per dataset from ``default_rng([seed, WORLD_STREAM])`` and
kept in memory as numpy arrays (its size grows with doctors × days, not with claims).
Entity indices are positions in these arrays; string ids are made only when writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from data_synth.config import SynthConfig

WORLD_STREAM = 0

DEPARTMENTS = ("internal", "surgery", "pediatrics", "gynecology", "orthopedics", "cardiology",
               "endocrinology", "respiratory", "dermatology", "emergency")
TITLES = ("resident", "attending", "associate_chief", "chief")
TITLE_P = (0.35, 0.35, 0.2, 0.1)
# (category, chronic use, log-price centre in yuan per unit)
DRUG_CATEGORIES = (
    ("antibiotic", False, 1.0), ("analgesic", False, 0.3), ("respiratory", False, 0.8),
    ("gastro", False, 0.9), ("dermatology", False, 1.2), ("vitamin", False, -0.2),
    ("tcm", False, 1.5), ("antihypertensive", True, 0.7), ("antidiabetic", True, 1.0),
    ("lipid", True, 1.3), ("anticoagulant", True, 2.0), ("oncology", False, 4.5),
    ("biologic", False, 5.5), ("hormone", False, 1.8),
)
N_EXAMS, N_TREATMENTS, N_MATERIALS = 24, 20, 12
SEXES = np.array(["M", "F"])


@dataclass
class World:
    """Arrays describing every non-patient entity and the catalogues.

    Index conventions: facilities, doctors, pharmacies are sorted by region (facilities,
    pharmacies) or facility (doctors), so ``*_start[g]:*_start[g] + *_count[g]`` slices
    one group.  Days are offsets from ``config.start_date``.
    """

    config: SynthConfig
    n_days: int
    start_epoch: int                      # start_date as days since 1970-01-01
    weekday: np.ndarray                   # (n_days,) 0 = Monday
    month_of_day: np.ndarray              # (n_days,) 0-based month index
    month_start_day: np.ndarray           # (months,) first day offset of each month
    day_weight: np.ndarray                # (n_days,) seasonal × weekday visit weight, sums to 1
    region_codes: np.ndarray              # (R,) str
    fac_region: np.ndarray                # (F,)
    fac_level: np.ndarray                 # (F,) 1..3
    fac_public: np.ndarray                # (F,) bool
    fac_weight: np.ndarray                # (F,) attractiveness for visits
    fac_region_start: np.ndarray          # (R,)
    fac_region_count: np.ndarray          # (R,)
    doc_fac: np.ndarray                   # (D,)
    doc_dept: np.ndarray                  # (D,) index into DEPARTMENTS
    doc_title: np.ndarray                 # (D,) index into TITLES
    doc_credit: np.ndarray                # (D,)
    fac_doc_start: np.ndarray             # (F,)
    fac_doc_count: np.ndarray             # (F,)
    duty: np.ndarray                      # (D, n_days) bool
    next_duty: np.ndarray                 # (D, n_days + 1) next on-duty day >= t, n_days if none
    prev_duty: np.ndarray                 # (D, n_days) last on-duty day <= t, -1 if none
    next_off: np.ndarray                  # (D, n_days + 1) next off-duty day >= t, n_days if none
    ph_region: np.ndarray                 # (Ph,)
    ph_chain: np.ndarray                  # (Ph,) chain index or -1
    ph_region_start: np.ndarray
    ph_region_count: np.ndarray
    drug_category: np.ndarray             # (G,) index into DRUG_CATEGORIES
    drug_chronic: np.ndarray              # (G,) bool
    drug_price: np.ndarray                # (G,) yuan / unit
    drug_max_daily: np.ndarray            # (G,) units / day
    drug_reimbursable: np.ndarray         # (G,) bool
    drug_sex: np.ndarray                  # (G,) 0 none, 1 M only, 2 F only
    drug_min_age: np.ndarray              # (G,) -1 none
    drug_max_age: np.ndarray              # (G,) -1 none
    drug_level: np.ndarray                # (G,) 0 none else minimum facility level
    acute_drugs: np.ndarray               # indices of unrestricted-ish acute drugs
    chronic_drugs: np.ndarray             # indices of chronic drugs without restrictions
    safe_drugs: np.ndarray                # drugs with no sex/age/level restriction
    expensive_drugs: np.ndarray           # reimbursable, unrestricted, top price decile
    item_codes: np.ndarray                # (G + services,) str; drugs first
    item_types: np.ndarray                # (G + services,) str
    item_price: np.ndarray                # (G + services,) yuan / unit
    item_reimbursable: np.ndarray         # (G + services,) bool
    exam_items: np.ndarray                # item indices
    treatment_items: np.ndarray
    material_items: np.ndarray
    consult_item: int
    bed_item_by_level: np.ndarray         # (4,) item index of a bed day at level 1..3
    diag_codes: np.ndarray                # (K,) str; acute outpatient, chronic, inpatient blocks
    acute_diags: np.ndarray
    chronic_diags: np.ndarray             # one per chronic drug category (aligned with CHRONIC_CATS)
    inpatient_diags: np.ndarray
    drg_codes: np.ndarray                 # (2 × inpatient diags,) str
    drg_weight: np.ndarray                # (2 × inpatient diags,)
    diag_drg: np.ndarray                  # (K,) base DRG index for a diagnosis (-1: not inpatient)
    supplier_of_pharmacy: np.ndarray      # (Ph,) supplier index
    region_weight: np.ndarray             # (R,) share of patients living in each region
    inpatient_fac: np.ndarray             # level >= 2 facilities sorted by region
    inpatient_fac_start: np.ndarray       # (R,)
    inpatient_fac_count: np.ndarray       # (R,)
    doctor_ids: pl.Series = None
    facility_ids: pl.Series = None
    pharmacy_ids: pl.Series = None
    extra: dict = field(default_factory=dict)   # per-typology world state (chosen entities)

    @property
    def n_doctors(self) -> int:
        return len(self.doc_fac)

    @property
    def n_pharmacies(self) -> int:
        return len(self.ph_region)

    @property
    def n_facilities(self) -> int:
        return len(self.fac_region)


def _group_bounds(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return starts.astype(np.int64), counts.astype(np.int64)


def _next_true(mask: np.ndarray) -> np.ndarray:
    """(rows, cols+1): for each t the first column >= t where mask is True (cols if none)."""
    rows, cols = mask.shape
    out = np.full((rows, cols + 1), cols, dtype=np.int16)
    for t in range(cols - 1, -1, -1):   # loop over days, vectorised over rows
        out[:, t] = np.where(mask[:, t], t, out[:, t + 1])
    return out


def _prev_true(mask: np.ndarray) -> np.ndarray:
    rows, cols = mask.shape
    out = np.full((rows, cols), -1, dtype=np.int16)
    last = np.full(rows, -1, dtype=np.int16)
    for t in range(cols):
        last = np.where(mask[:, t], t, last).astype(np.int16)
        out[:, t] = last
    return out


def build_world(config: SynthConfig) -> World:
    """Build every non-patient entity and catalogue from ``config`` (deterministic)."""
    rng = np.random.default_rng([config.seed, WORLD_STREAM])
    pop, care = config.populations, config.care
    n_days = config.n_days
    start_epoch = (config.start_date - date(1970, 1, 1)).days
    weekday = (np.arange(n_days) + config.start_date.weekday()) % 7
    day_dates = np.datetime64(config.start_date) + np.arange(n_days)
    month_index = (day_dates.astype("datetime64[M]") - np.datetime64(config.start_date, "M")).astype(int)
    month_start = np.searchsorted(month_index, np.arange(config.months))
    doy = (day_dates - day_dates.astype("datetime64[Y]")).astype(int)
    season = 1 + care.seasonality * np.cos(2 * np.pi * (doy - 15) / 365.25)
    week = np.where(weekday < 5, 1.0, np.where(weekday == 5, 0.55, 0.35))
    day_weight = season * week
    day_weight /= day_weight.sum()

    n_regions = pop.regions
    region_codes = np.array([f"REG{r + 1:02d}" for r in range(n_regions)])

    # Facilities: every region gets one level-2 hospital first so inpatient care exists locally.
    n_fac = pop.facilities
    fac_region = np.sort(np.concatenate([np.arange(n_regions),
                                         rng.integers(0, n_regions, n_fac - n_regions)]))
    fac_level = rng.choice([1, 2, 3], size=n_fac, p=[0.6, 0.3, 0.1])
    fac_region_start, fac_region_count = _group_bounds(fac_region, n_regions)
    fac_level[fac_region_start] = np.maximum(fac_level[fac_region_start], 2)
    fac_public = np.where(fac_level == 3, rng.random(n_fac) < 0.95, rng.random(n_fac) < 0.6)
    fac_weight = np.array([0, 1.0, 4.0, 12.0])[fac_level] * rng.lognormal(0, 0.3, n_fac)

    # Doctors: one per facility, the rest in proportion to facility size; sorted by facility.
    n_doc = pop.doctors
    extra_doc = rng.choice(n_fac, size=n_doc - n_fac, p=fac_weight / fac_weight.sum())
    doc_fac = np.sort(np.concatenate([np.arange(n_fac), extra_doc]))
    fac_doc_start, fac_doc_count = _group_bounds(doc_fac, n_fac)
    doc_dept = rng.integers(0, len(DEPARTMENTS), n_doc)
    doc_title = rng.choice(len(TITLES), size=n_doc, p=TITLE_P)
    doc_credit = 12 - rng.choice([0, 0, 0, 0, 2, 3, 6], size=n_doc)

    is_weekday = weekday < 5
    duty = np.where(is_weekday[None, :], rng.random((n_doc, n_days)) < care.duty_rate,
                    rng.random((n_doc, n_days)) < care.weekend_duty_rate)

    # Pharmacies sorted by region; chains group a share of them.
    n_ph = pop.pharmacies
    ph_region = np.sort(np.concatenate([np.arange(n_regions),
                                        rng.integers(0, n_regions, n_ph - n_regions)]))
    ph_region_start, ph_region_count = _group_bounds(ph_region, n_regions)
    n_chains = max(1, n_ph // 12)
    ph_chain = np.where(rng.random(n_ph) < care.chain_share, rng.integers(0, n_chains, n_ph), -1)
    supplier = rng.integers(0, max(3, n_ph // 20), n_ph)

    # Drug catalogue: log-normal prices around each category's centre.
    n_drugs = pop.drugs
    cat = rng.integers(0, len(DRUG_CATEGORIES), n_drugs)
    cat[: len(DRUG_CATEGORIES)] = np.arange(len(DRUG_CATEGORIES))   # every category present
    chronic_cat = np.array([c[1] for c in DRUG_CATEGORIES])
    centre = np.array([c[2] for c in DRUG_CATEGORIES])
    price = np.round(np.clip(np.exp(centre[cat] + rng.normal(0, 0.9, n_drugs)), 0.05, 20_000), 2)
    max_daily = rng.choice([1.0, 2.0, 3.0, 4.0, 6.0], size=n_drugs, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    reimbursable = rng.random(n_drugs) < 0.85
    u = rng.random(n_drugs)
    drug_sex = np.where(u < 0.05, 2, np.where(u < 0.08, 1, 0))
    v = rng.random(n_drugs)
    drug_min_age = np.where(v < 0.05, 18, np.where(v < 0.07, 60, -1))
    drug_max_age = np.where((v >= 0.07) & (v < 0.10), 12, -1)
    drug_level = np.where(rng.random(n_drugs) < 0.10, rng.choice([2, 3], n_drugs), 0)
    chronic = chronic_cat[cat]
    unrestricted = (drug_sex == 0) & (drug_min_age < 0) & (drug_max_age < 0) & (drug_level == 0)
    # Chronic drugs are ordinary, reimbursable and unrestricted (the honest refill staple).
    drug_sex[chronic], drug_min_age[chronic], drug_max_age[chronic] = 0, -1, -1
    drug_level[chronic] = 0
    reimbursable[chronic] = True
    unrestricted = unrestricted | chronic
    safe = np.flatnonzero(unrestricted & ~chronic)
    acute = np.flatnonzero(~chronic & (cat != 11) & (cat != 12))
    chronic_idx = np.flatnonzero(chronic)
    pricey = np.flatnonzero(unrestricted & reimbursable & ~chronic)
    expensive = pricey[price[pricey] >= np.quantile(price[pricey], 0.85)]

    # Service catalogue appended after drugs.
    exam_price = np.round(rng.lognormal(np.log(80), 0.8, N_EXAMS), 2)
    treat_price = np.round(rng.lognormal(np.log(60), 0.7, N_TREATMENTS), 2)
    mat_price = np.round(rng.lognormal(np.log(150), 1.0, N_MATERIALS), 2)
    codes = ([f"X{i + 1:05d}" for i in range(n_drugs)]
             + [f"EX{i + 1:03d}" for i in range(N_EXAMS)]
             + ["TR000"] + [f"TR{i + 1:03d}" for i in range(N_TREATMENTS)]
             + [f"MT{i + 1:03d}" for i in range(N_MATERIALS)]
             + ["BED1", "BED2", "BED3"])
    types = (["drug"] * n_drugs + ["exam"] * N_EXAMS + ["treatment"] * (N_TREATMENTS + 1)
             + ["material"] * N_MATERIALS + ["bed"] * 3)
    prices = np.concatenate([price, exam_price, [25.0], treat_price, mat_price, [45.0, 90.0, 160.0]])
    base = n_drugs
    exam_items = np.arange(base, base + N_EXAMS)
    consult = base + N_EXAMS
    treatment_items = np.arange(consult + 1, consult + 1 + N_TREATMENTS)
    material_items = np.arange(consult + 1 + N_TREATMENTS, consult + 1 + N_TREATMENTS + N_MATERIALS)
    bed_items = np.array([-1, *range(len(codes) - 3, len(codes))])
    item_reimb = np.concatenate([reimbursable, np.ones(len(codes) - n_drugs, bool)])

    # Diagnoses: acute outpatient, one chronic code per chronic category, inpatient ADRG blocks.
    chronic_cats = [i for i, c in enumerate(DRUG_CATEGORIES) if c[1]]
    acute_codes = [f"J{i:02d}.{i % 10}" for i in range(30)]
    chronic_codes = ["I10", "E11", "E78", "I48"][: len(chronic_cats)]
    inpatient_codes = [f"K{i:02d}.{(3 * i) % 10}" for i in range(25)]
    diag_codes = np.array(acute_codes + chronic_codes + inpatient_codes)
    acute_diags = np.arange(30)
    chronic_diags = np.arange(30, 30 + len(chronic_codes))
    inpatient_diags = np.arange(30 + len(chronic_codes), len(diag_codes))
    n_adrg = len(inpatient_codes)
    adrg_weight = np.round(np.sort(rng.lognormal(0.0, 0.6, n_adrg)), 3)
    # Base group "…3" (no complication) and "…1" (with major complication, heavier).
    drg_codes = np.array([f"{'ABCDEFGHIJKLMNOPQRSTUVWXY'[k]}R{k:02d}{s}"
                          for k in range(n_adrg) for s in (3, 1)])
    drg_weight = np.round(np.repeat(adrg_weight, 2) * np.tile([1.0, 1.6], n_adrg), 3)
    diag_drg = np.full(len(diag_codes), -1)
    diag_drg[inpatient_diags] = 2 * np.arange(n_adrg)

    region_weight = rng.dirichlet(np.full(n_regions, 3.0))
    inp_fac = np.flatnonzero(fac_level >= 2)          # already sorted by region
    inp_start, inp_count = _group_bounds(fac_region[inp_fac], n_regions)

    return World(
        config=config, n_days=n_days, start_epoch=start_epoch, weekday=weekday,
        month_of_day=month_index, month_start_day=month_start, day_weight=day_weight,
        region_codes=region_codes, fac_region=fac_region, fac_level=fac_level,
        fac_public=fac_public, fac_weight=fac_weight, fac_region_start=fac_region_start,
        fac_region_count=fac_region_count, doc_fac=doc_fac, doc_dept=doc_dept,
        doc_title=doc_title, doc_credit=doc_credit, fac_doc_start=fac_doc_start,
        fac_doc_count=fac_doc_count, duty=duty, next_duty=_next_true(duty),
        prev_duty=_prev_true(duty), next_off=_next_true(~duty), ph_region=ph_region,
        ph_chain=ph_chain, ph_region_start=ph_region_start, ph_region_count=ph_region_count,
        drug_category=cat, drug_chronic=chronic, drug_price=price, drug_max_daily=max_daily,
        drug_reimbursable=reimbursable, drug_sex=drug_sex, drug_min_age=drug_min_age,
        drug_max_age=drug_max_age, drug_level=drug_level, acute_drugs=acute,
        chronic_drugs=chronic_idx, safe_drugs=safe, expensive_drugs=expensive,
        item_codes=np.array(codes), item_types=np.array(types), item_price=prices,
        item_reimbursable=item_reimb, exam_items=exam_items, treatment_items=treatment_items,
        material_items=material_items, consult_item=consult, bed_item_by_level=bed_items,
        diag_codes=diag_codes, acute_diags=acute_diags, chronic_diags=chronic_diags,
        inpatient_diags=inpatient_diags, drg_codes=drg_codes, drg_weight=drg_weight,
        diag_drg=diag_drg, supplier_of_pharmacy=supplier, region_weight=region_weight,
        inpatient_fac=inp_fac, inpatient_fac_start=inp_start, inpatient_fac_count=inp_count,
        doctor_ids=pl.Series(_ids("D", n_doc)), facility_ids=pl.Series(_ids("F", n_fac)),
        pharmacy_ids=pl.Series(_ids("R", n_ph)),
    )


def refresh_duty(world: World) -> None:
    """Recompute the duty look-ups after a typology edited ``world.duty``."""
    world.next_duty = _next_true(world.duty)
    world.prev_duty = _prev_true(world.duty)
    world.next_off = _next_true(~world.duty)


# ---------------------------------------------------------------- contract tables

def facilities_frame(w: World) -> pl.DataFrame:
    return pl.DataFrame({
        "facility_id": _ids("F", len(w.fac_region)),
        "level": w.fac_level.astype(np.int8),
        "ownership": np.where(w.fac_public, "public", "private"),
        "region": w.region_codes[w.fac_region],
    })


def doctors_frame(w: World) -> pl.DataFrame:
    return pl.DataFrame({
        "doctor_id": _ids("D", w.n_doctors),
        "facility_id": _ids("F", w.n_facilities)[w.doc_fac],
        "department": np.array(DEPARTMENTS)[w.doc_dept],
        "title": np.array(TITLES)[w.doc_title],
        "credit_points": w.doc_credit.astype(np.int32),
    })


def pharmacies_frame(w: World) -> pl.DataFrame:
    chain = np.array([f"CH{c + 1:03d}" for c in range(max(w.ph_chain.max() + 1, 1))])
    return pl.DataFrame({
        "pharmacy_id": _ids("R", w.n_pharmacies),
        "region": w.region_codes[w.ph_region],
        "chain_id": _nullable(chain[np.maximum(w.ph_chain, 0)], w.ph_chain >= 0, pl.String),
    })


def drugs_frame(w: World) -> pl.DataFrame:
    n = len(w.drug_price)
    names = np.array([c[0] for c in DRUG_CATEGORIES])[w.drug_category]
    return pl.DataFrame({
        "drug_code": w.item_codes[:n],
        "name": np.char.add(np.char.add(names, "-"), np.arange(1, n + 1).astype(str)),
        "category": names,
        "unit_price": w.drug_price,
        "max_daily_units": w.drug_max_daily,
        "reimbursable": w.drug_reimbursable,
        "sex_restriction": _nullable(np.where(w.drug_sex == 1, "M", "F"), w.drug_sex > 0, pl.String),
        "min_age": _nullable(w.drug_min_age, w.drug_min_age >= 0, pl.Int32),
        "max_age": _nullable(w.drug_max_age, w.drug_max_age >= 0, pl.Int32),
        "restricted_level": _nullable(w.drug_level, w.drug_level > 0, pl.Int8),
    })


def duty_roster_frame(w: World) -> pl.DataFrame:
    """(doctors × duty days) rows sorted by doctor then date.

    Ids are gathered from the small id Series inside polars: building the rows as numpy
    unicode arrays first cost seconds per million rows in the numpy → polars conversion.
    """
    doc, day = np.nonzero(w.duty)
    return pl.DataFrame({
        "doctor_id": w.doctor_ids.gather(doc),
        "facility_id": w.facility_ids.gather(w.doc_fac[doc]),
        "date": pl.Series(day + w.start_epoch, dtype=pl.Int32).cast(pl.Date),
    })


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width))


def _nullable(values: np.ndarray, present: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """Series of ``values`` with nulls where ``present`` is False."""
    return pl.select(pl.when(pl.Series(present)).then(pl.Series(values).cast(dtype))).to_series()
