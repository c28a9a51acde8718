// The crawler's actor database, through rivetkit-wasm: schema and the writes to its two tables
// (companies, jobs). Each board — its company and all its jobs — is stored in ONE atomic batch
// (protocol v5 `db.batch`, write mode): one round trip, all or nothing, exactly once.

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS companies (
  slug TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  website TEXT,
  industries TEXT NOT NULL,   -- comma-separated tags
  crawled_at INTEGER NOT NULL -- ms since epoch
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  company_slug TEXT NOT NULL,
  title TEXT NOT NULL,
  location TEXT,
  remote INTEGER NOT NULL     -- 0/1
);`;

export function migrate(db) {
  return db.exec(SCHEMA);
}

const UPSERT_COMPANY = `INSERT INTO companies (slug, name, website, industries, crawled_at) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT (slug) DO UPDATE SET name = excluded.name, website = excluded.website,
    industries = excluded.industries, crawled_at = excluded.crawled_at`;

const UPSERT_JOB = `INSERT INTO jobs (id, company_slug, title, location, remote) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET company_slug = excluded.company_slug, title = excluded.title,
    location = excluded.location, remote = excluded.remote`;

/**
 * A company and its jobs in one batch: the company row and one upsert per job, applied together
 * or not at all. Returns the rows changed per table and the batch's statement count.
 */
export async function storeBoard(db, company, jobs, now) {
  const results = await db.batch(
    [
      { sql: UPSERT_COMPANY, params: [company.slug, company.name, company.website, company.industries.join(","), now] },
      ...jobs.map((j) => ({ sql: UPSERT_JOB, params: [j.id, j.companySlug, j.title, j.location, j.remote] })),
    ],
    { mode: "write" },
  );
  return {
    companies: results[0].changes,
    jobs: results.slice(1).reduce((n, r) => n + r.changes, 0),
    statements: results.length,
  };
}
