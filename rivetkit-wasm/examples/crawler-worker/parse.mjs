// Extracts what the crawler stores from the fixture's HTML pages (small, regex-based: the pages
// are ours and regular; a real crawler would use HTMLRewriter or a parser).

const unescape = (s) =>
  s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&");

const one = (html, re) => {
  const m = re.exec(html);
  return m ? unescape(m[1].trim()) : null;
};

/** A board page: the company and the links to its job pages. */
export function parseBoard(slug, html) {
  const industries = [...html.matchAll(/<li>([^<]*)<\/li>/g)].map((m) => unescape(m[1]));
  const jobLinks = [...html.matchAll(/<a class="job" href="([^"]+)"/g)].map((m) => unescape(m[1]));
  return {
    company: {
      slug,
      name: one(html, /<h1 class="company">([^<]*)<\/h1>/),
      website: one(html, /<a class="website" href="([^"]*)"/),
      industries,
    },
    jobLinks,
  };
}

/** A job page. */
export function parseJob(companySlug, href, html) {
  return {
    id: href.split("/").pop(),
    companySlug,
    title: one(html, /<h1 class="title">([^<]*)<\/h1>/),
    location: one(html, /<span class="location">([^<]*)<\/span>/),
    remote: one(html, /<span class="remote">([^<]*)<\/span>/) === "yes",
  };
}
