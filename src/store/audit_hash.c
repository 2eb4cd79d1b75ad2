/*
 * audit_hash.c: the chain hash of one audit entry (store.h tg_audit_hash).
 *
 * hash = SHA-256(prev_hash || enc(id) || enc(org_id) || be64(time_ms) || enc(type) || ...),
 * every field of the entry except seq and hash, in declaration order. A text field is encoded
 * as its length in 8 bytes big-endian followed by its bytes, and NULL as the length
 * 0xFFFFFFFFFFFFFFFF with no bytes: so the encoding is unambiguous (no two entries that differ
 * in any field, including NULL against "" or a byte moved across a field boundary, encode
 * alike). seq is left out on purpose: it is the position in the chain, which prev_hash already
 * fixes, and leaving it out lets a verifier report a gap as a gap rather than as a bad hash.
 *
 * Pure: no I/O, no store; the SQLite and PostgreSQL backends and `tollgate audit verify` share
 * it, so changing the encoding breaks every stored chain. Never change it; add a new one.
 */
#include "store/store.h"

#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/crypto.h"

static void
put_be64(struct tg_buf *b, uint64_t v)
{
    unsigned char out[8];
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    tg_buf_append(b, out, sizeof(out)); /* uncapped buffer: cannot fail */
}

static void
put_text(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        put_be64(b, UINT64_MAX);
        return;
    }
    size_t n = strlen(s);
    put_be64(b, (uint64_t)n);
    tg_buf_append(b, s, n);
}

void
tg_audit_hash(const struct tg_audit_rec *r, unsigned char out[TG_SHA256_BYTES])
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append(&b, r->prev_hash, TG_SHA256_BYTES);
    put_text(&b, r->id);
    put_text(&b, r->org_id);
    put_be64(&b, (uint64_t)r->time_ms);
    put_text(&b, r->type);
    put_text(&b, r->actor_type);
    put_text(&b, r->actor_id);
    put_text(&b, r->actor_user);
    put_text(&b, r->project_id);
    put_text(&b, r->target_id);
    put_text(&b, r->before);
    put_text(&b, r->after);
    put_text(&b, r->source_addr);
    tg_sha256(b.data, b.len, out);
    tg_buf_deinit(&b);
}
