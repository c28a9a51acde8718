// The crawler's actor database, through rivetkit-wasm: schema and the writes to its two
// disjoint tables (companies, jobs). Each write is one remote statement.

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

export async function upsertCompany(db, c, now) {
  const r = await db.executeWrite(
    `INSERT INTO companies (slug, name, website, industries, crawled_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (slug) DO UPDATE SET name = excluded.name, website = excluded.website,
       industries = excluded.industries, crawled_at = excluded.crawled_at`,
    [c.slug, c.name, c.website, c.industries.join(","), now],
  );
  return r.changes;
}

/** All jobs of one board in one statement. */
export async function upsertJobs(db, jobs) {
  if (jobs.length === 0) return 0;
  const rows = jobs.map(() => "(?, ?, ?, ?, ?)").join(", ");
  const params = jobs.flatMap((j) => [j.id, j.companySlug, j.title, j.location, j.remote]);
  const r = await db.executeWrite(
    `INSERT INTO jobs (id, company_slug, title, location, remote) VALUES ${rows}
     ON CONFLICT (id) DO UPDATE SET company_slug = excluded.company_slug, title = excluded.title,
       location = excluded.location, remote = excluded.remote`,
    params,
  );
  return r.changes;
}
