// The job boards the fixture server serves, generated deterministically, so the test can check
// every row the crawler stored against the source.

const NAMES = ["Acme AI", "Brightwave", "Café Løgic", "Dune & Sons", "Echo Labs", "Fjord Systems", "Gamma's Garage", "Helio", "Iris Health", "Juniper Data", "Kite Robotics", "Lumen"];
const INDUSTRIES = ["ai-ml", "devtools", "fintech", "health", "climate", "robotics"];
const TITLES = ["Rust Engineer", "Backend Engineer (Go)", "Staff SRE", "Frontend Engineer", "Data Engineer", "ML Engineer"];
const LOCATIONS = ["Berlin", "Remote — EU", "Lisbon", "Remote — Worldwide", "Paris", "Zürich"];

export function boards() {
  return NAMES.map((name, i) => {
    const slug = name.toLowerCase().normalize("NFD").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
    const jobs = Array.from({ length: 1 + (i % 5) }, (_, k) => ({
      id: `${slug}-${k + 1}`,
      title: TITLES[(i + k) % TITLES.length],
      location: LOCATIONS[(i * 2 + k) % LOCATIONS.length],
      remote: LOCATIONS[(i * 2 + k) % LOCATIONS.length].startsWith("Remote"),
    }));
    return {
      slug,
      name,
      website: `https://${slug}.example`,
      industries: [INDUSTRIES[i % INDUSTRIES.length], INDUSTRIES[(i * 3 + 1) % INDUSTRIES.length]].filter((x, j, a) => a.indexOf(x) === j),
      jobs,
    };
  });
}
