//! Synthetic bank transactions (Date, Description, Amount) for demos and benchmarks:
//! card purchases, Zelle payments, payroll, ATM, transfers, refunds, fees. Deterministic for
//! a given seed.

use std::io::Write;

const MERCHANTS: &[&str] = &[
    "COSTCO WHSE",
    "AMAZON MKTPLACE PMTS",
    "TRADER JOE'S",
    "SHELL OIL 57442",
    "STARBUCKS STORE",
    "WHOLE FOODS MKT",
    "TARGET T-1290",
    "UBER *TRIP",
    "NETFLIX.COM",
    "SPOTIFY USA",
    "CHEVRON 0091",
    "HOME DEPOT #4711",
    "WALGREENS #1822",
    "SAFEWAY #0312",
    "APPLE.COM/BILL",
    "PAYPAL *EBAY INC",
    "DELTA AIR LINES",
    "CHIPOTLE 2290",
    "IKEA SEATTLE",
    "BEST BUY 00012",
];
const CITIES: &[(&str, &str)] = &[
    ("SEATTLE", "WA"),
    ("PORTLAND", "OR"),
    ("SAN FRANCISCO", "CA"),
    ("AUSTIN", "TX"),
    ("NEW YORK", "NY"),
    ("CHICAGO", "IL"),
    ("DENVER", "CO"),
    ("BOSTON", "MA"),
];
const NAMES: &[&str] = &[
    "Zoë Smith",
    "Liam O'Connor",
    "Nguyễn Văn An",
    "Ève Dupont",
    "John Miller",
    "Priya Patel",
    "Carlos García",
    "Mei Chen",
    "Ahmed Hassan",
    "Olga Petrova",
];
const MEMOS: &[&str] = &[
    "rent",
    "dinner at Joe's",
    "split — groceries",
    "concert tickets",
    "utilities",
    "birthday gift",
];
const EMPLOYERS: &[&str] = &[
    "ACME CORP",
    "GLOBEX INC",
    "INITECH LLC",
    "UMBRELLA CO",
    "STARK IND",
];
const SERVICES: &[&str] = &[
    "COMCAST CABLE",
    "VERIZON WIRELESS",
    "PUGET SOUND ENERGY",
    "GEICO AUTO",
    "PLANET FITNESS",
];

/// splitmix64: small, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

const DAYS_IN_MONTH_2024: [u64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

fn date(day_of_year: u64) -> (u64, u64) {
    let mut d = day_of_year;
    for (m, len) in DAYS_IN_MONTH_2024.iter().enumerate() {
        if d < *len {
            return (m as u64 + 1, d + 1);
        }
        d -= len;
    }
    (12, 31)
}

/// A card purchase at a merchant: (description, amount).
fn card_purchase(
    rng: &mut Rng,
    (month, day): (u64, u64),
    (city, state): (&str, &str),
) -> (String, f64) {
    let m = rng.pick(MERCHANTS);
    let amount = -(2.0 + (rng.unit() * 5.5).exp());
    let d = if rng.below(2) == 0 {
        format!("POS PURCHASE {m} {city} {state} CARD {}", rng.digits(4))
    } else {
        format!(
            "CARD PURCHASE {month:02}{day:02} {m} {city} {state} CARD {}",
            rng.digits(4)
        )
    };
    (d, amount)
}

/// A Zelle payment to or from a person: (description, amount).
fn zelle(rng: &mut Rng) -> (String, f64) {
    let name = rng.pick(NAMES);
    let amount = 5.0 + rng.unit() * 900.0;
    if rng.below(2) == 0 {
        (
            format!("Zelle payment to {name} Conf# {}", rng.hex(10)),
            -amount,
        )
    } else {
        let memo = rng.pick(MEMOS);
        (
            format!(
                "Zelle payment from {name} for \"{memo}\"; Conf# {}",
                rng.hex(10)
            ),
            amount,
        )
    }
}

/// One transaction: (date, description, amount).
pub fn transaction(rng: &mut Rng) -> (String, String, f64) {
    let (month, day) = date(rng.below(366));
    let when = format!("2024-{month:02}-{day:02}");
    let (city, state) = *rng.pick(CITIES);
    let kind = rng.below(100);
    let (description, amount) = match kind {
        0..=44 => card_purchase(rng, (month, day), (city, state)),
        45..=59 => zelle(rng),
        60..=69 => (
            format!(
                "ACH DEPOSIT {} PAYROLL PPD ID: {}",
                rng.pick(EMPLOYERS),
                rng.digits(10)
            ),
            1500.0 + rng.unit() * 2600.0,
        ),
        70..=77 => (
            format!(
                "ATM WITHDRAWAL {} {} MAIN ST {city} {state}",
                rng.digits(6),
                rng.below(9000) + 100
            ),
            -(20.0 * (1 + rng.below(20)) as f64),
        ),
        78..=85 => (
            format!(
                "ONLINE TRANSFER TO SAV ...{} TRANSACTION#: {}",
                rng.digits(4),
                rng.digits(11)
            ),
            -(50.0 + rng.unit() * 3800.0),
        ),
        86..=91 => (
            format!(
                "Refund: {} returned item {}",
                rng.pick(MERCHANTS),
                rng.digits(5)
            ),
            5.0 + rng.unit() * 2500.0,
        ),
        92..=97 => (
            format!(
                "RECURRING PAYMENT {} {}-{}-{}",
                rng.pick(SERVICES),
                rng.digits(3),
                rng.digits(3),
                rng.digits(4)
            ),
            -(15.0 + rng.unit() * 250.0),
        ),
        _ => ("MONTHLY SERVICE FEE".to_string(), -12.0),
    };
    (when, description, (amount * 100.0).round() / 100.0)
}

/// Writes a header and `rows` transactions as CSV.
pub fn write_csv<W: Write>(out: W, rows: u64, seed: u64) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["Date", "Description", "Amount"])?;
    let mut rng = Rng::new(seed);
    for _ in 0..rows {
        let (d, desc, amount) = transaction(&mut rng);
        w.write_record([d.as_str(), desc.as_str(), format!("{amount:.2}").as_str()])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_it_parses() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_csv(&mut a, 500, 7).unwrap();
        write_csv(&mut b, 500, 7).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        write_csv(&mut c, 500, 8).unwrap();
        assert_ne!(a, c);
        let mut r = csv::Reader::from_reader(&a[..]);
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 500);
        assert!(rows
            .iter()
            .all(|r| r[2].parse::<f64>().is_ok() && r[0].starts_with("2024-")));
    }
}
