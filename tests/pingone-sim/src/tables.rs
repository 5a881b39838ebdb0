//! Static word lists the generator draws from: names, places consistent with their country,
//! departments and application names.

/// A city with the region (state/province) and postal code prefix that belong to it.
#[derive(Debug)]
pub struct City {
    /// `address.locality`.
    pub locality: &'static str,
    /// `address.region`.
    pub region: &'static str,
    /// Postal code prefix; digits are appended.
    pub postal_prefix: &'static str,
    /// IANA time zone.
    pub timezone: &'static str,
}

/// A country and its cities.
#[derive(Debug)]
pub struct Country {
    /// ISO 3166-1 alpha-2 (`address.countryCode`).
    pub code: &'static str,
    /// `locale`.
    pub locale: &'static str,
    /// `preferredLanguage`.
    pub language: &'static str,
    /// Phone country calling code.
    pub phone: &'static str,
    /// Weight of the country among users.
    pub weight: f64,
    /// Its cities.
    pub cities: &'static [City],
}

const fn city(
    locality: &'static str,
    region: &'static str,
    postal_prefix: &'static str,
    timezone: &'static str,
) -> City {
    City {
        locality,
        region,
        postal_prefix,
        timezone,
    }
}

/// Countries users live in.
pub static COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        locale: "en-US",
        language: "en",
        phone: "+1",
        weight: 45.0,
        cities: &[
            city("San Francisco", "CA", "941", "America/Los_Angeles"),
            city("Austin", "TX", "787", "America/Chicago"),
            city("New York", "NY", "100", "America/New_York"),
            city("Denver", "CO", "802", "America/Denver"),
            city("Seattle", "WA", "981", "America/Los_Angeles"),
            city("Chicago", "IL", "606", "America/Chicago"),
        ],
    },
    Country {
        code: "CA",
        locale: "en-CA",
        language: "en",
        phone: "+1",
        weight: 8.0,
        cities: &[
            city("Toronto", "ON", "M5V", "America/Toronto"),
            city("Vancouver", "BC", "V6B", "America/Vancouver"),
            city("Montréal", "QC", "H2Y", "America/Toronto"),
        ],
    },
    Country {
        code: "GB",
        locale: "en-GB",
        language: "en",
        phone: "+44",
        weight: 10.0,
        cities: &[
            city("London", "England", "EC1A", "Europe/London"),
            city("Manchester", "England", "M1", "Europe/London"),
            city("Edinburgh", "Scotland", "EH1", "Europe/London"),
        ],
    },
    Country {
        code: "DE",
        locale: "de-DE",
        language: "de",
        phone: "+49",
        weight: 9.0,
        cities: &[
            city("Berlin", "Berlin", "101", "Europe/Berlin"),
            city("München", "Bayern", "803", "Europe/Berlin"),
            city("Hamburg", "Hamburg", "203", "Europe/Berlin"),
        ],
    },
    Country {
        code: "FR",
        locale: "fr-FR",
        language: "fr",
        phone: "+33",
        weight: 6.0,
        cities: &[
            city("Paris", "Île-de-France", "750", "Europe/Paris"),
            city("Lyon", "Auvergne-Rhône-Alpes", "690", "Europe/Paris"),
        ],
    },
    Country {
        code: "IN",
        locale: "en-IN",
        language: "en",
        phone: "+91",
        weight: 10.0,
        cities: &[
            city("Bengaluru", "Karnataka", "560", "Asia/Kolkata"),
            city("Pune", "Maharashtra", "411", "Asia/Kolkata"),
            city("Hyderabad", "Telangana", "500", "Asia/Kolkata"),
        ],
    },
    Country {
        code: "AU",
        locale: "en-AU",
        language: "en",
        phone: "+61",
        weight: 5.0,
        cities: &[
            city("Sydney", "NSW", "20", "Australia/Sydney"),
            city("Melbourne", "VIC", "30", "Australia/Melbourne"),
        ],
    },
    Country {
        code: "JP",
        locale: "ja-JP",
        language: "ja",
        phone: "+81",
        weight: 4.0,
        cities: &[
            city("Tokyo", "Tokyo", "100-", "Asia/Tokyo"),
            city("Osaka", "Osaka", "530-", "Asia/Tokyo"),
        ],
    },
    Country {
        code: "BR",
        locale: "pt-BR",
        language: "pt",
        phone: "+55",
        weight: 3.0,
        cities: &[
            city("São Paulo", "SP", "01310-", "America/Sao_Paulo"),
            city("Rio de Janeiro", "RJ", "20040-", "America/Sao_Paulo"),
        ],
    },
];

/// Given names.
pub static GIVEN: &[&str] = &[
    "Aaliyah", "Aarav", "Adriana", "Ahmed", "Akira", "Alice", "Amara", "Ana", "Andrei", "Arjun",
    "Beatriz", "Ben", "Carlos", "Chen", "Chloé", "Daniel", "Divya", "Elena", "Emma", "Fatima",
    "Felix", "Grace", "Hana", "Hugo", "Ines", "Isaac", "Jamal", "Jana", "Jin", "João", "Kai",
    "Kenji", "Laura", "Leon", "Lucía", "Maya", "Mei", "Mohammed", "Nadia", "Noah", "Olivia",
    "Omar", "Priya", "Rafael", "Ravi", "Sara", "Sofia", "Tariq", "Thomas", "Yuki", "Zoe",
];

/// Family names.
pub static FAMILY: &[&str] = &[
    "Adams",
    "Ahmed",
    "Almeida",
    "Becker",
    "Brown",
    "Chen",
    "Costa",
    "Dubois",
    "Fischer",
    "García",
    "Gupta",
    "Hansen",
    "Hernández",
    "Ito",
    "Johnson",
    "Kim",
    "Kowalski",
    "Kumar",
    "Lee",
    "Martin",
    "Meyer",
    "Müller",
    "Nguyen",
    "Novak",
    "Okafor",
    "O'Brien",
    "Patel",
    "Rossi",
    "Sato",
    "Schmidt",
    "Silva",
    "Singh",
    "Smith",
    "Suzuki",
    "Tanaka",
    "Taylor",
    "Wang",
    "Williams",
    "Yamamoto",
    "Zhang",
];

/// Job titles.
pub static TITLES: &[&str] = &[
    "Software Engineer",
    "Account Executive",
    "Product Manager",
    "Designer",
    "Analyst",
    "Support Specialist",
    "Recruiter",
    "Controller",
    "Site Reliability Engineer",
    "Counsel",
];

/// Departments (group names).
pub static DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Human Resources",
    "Legal",
    "Support",
    "Operations",
    "Product",
    "Design",
    "Security",
    "IT",
    "Data",
    "Procurement",
    "Facilities",
];

/// Application names.
pub static APP_NAMES: &[&str] = &[
    "Salesforce",
    "Slack",
    "Zoom",
    "Jira",
    "Confluence",
    "GitHub",
    "Workday",
    "ServiceNow",
    "Box",
    "Dropbox",
    "DocuSign",
    "Tableau",
    "Figma",
    "Miro",
    "Asana",
    "Notion",
    "Zendesk",
    "HubSpot",
    "Okta Bridge",
    "Expensify",
    "Concur",
    "Greenhouse",
    "Lattice",
    "BambooHR",
    "Datadog",
    "PagerDuty",
    "Snowflake",
    "Looker",
    "Coupa",
    "NetSuite",
    "Gong",
    "Outreach",
    "LucidChart",
    "Smartsheet",
    "Airtable",
    "Loom",
    "1Password",
    "Mural",
    "Canva",
    "Adobe Sign",
];

/// Population names.
pub static POPULATIONS: &[&str] = &[
    "Workforce",
    "Contractors",
    "Partners",
    "Acquired - Northwind",
    "Sandbox",
    "Interns",
    "Retail Stores",
    "Field Service",
];

/// User types and their weights; `None` = the `type` key is absent.
pub static USER_TYPES: &[(Option<&str>, f64)] = &[
    (Some("Employee"), 58.0),
    (Some("Contractor"), 14.0),
    (Some("Intern"), 4.0),
    (Some("Partner"), 4.0),
    (Some("Vendor"), 3.0),
    (Some("Service Account"), 1.0),
    (None, 16.0),
];
