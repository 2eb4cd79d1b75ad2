/*
 * api.h: the OpenAI endpoints tollgate relays, and the usage each one reports.
 *
 * Usage extraction is a pure parser of provider replies: it reads the usage object of a whole
 * response, of a chat/completions stream chunk, or of a Responses terminal event, in the
 * shape each endpoint uses (openai-wire.md, "Usage object cheat-sheet").
 */
#ifndef TG_UPSTREAM_API_H
#define TG_UPSTREAM_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum tg_api {
    TG_API_CHAT,        /* POST /v1/chat/completions */
    TG_API_COMPLETIONS, /* POST /v1/completions */
    TG_API_EMBEDDINGS,  /* POST /v1/embeddings */
    TG_API_RESPONSES,   /* POST /v1/responses */
    TG_API_MODERATIONS, /* POST /v1/moderations */
    TG_API_COUNT
};

/* "/chat/completions", ... (the path after /v1). */
const char *tg_api_path(enum tg_api api);

/* "chat.completions", ... for logs and the ledger's endpoint column. */
const char *tg_api_name(enum tg_api api);

/* Maps "/v1/chat/completions" etc. to the api. Returns false for anything else. */
bool tg_api_from_path(const char *path, enum tg_api *out);

struct tg_usage {
    int64_t prompt_tokens;     /* input tokens, cached ones included */
    int64_t cached_tokens;     /* subset of prompt_tokens */
    int64_t completion_tokens; /* output tokens, reasoning ones included */
    int64_t reasoning_tokens;  /* subset of completion_tokens */
    bool is_known;             /* the provider reported usage */
};

/*
 * Reads the usage object `usage` (the value of a "usage" member) in the shape api uses into
 * out and sets out->is_known. Returns false (out untouched) when usage is not an object or
 * lacks the required counts.
 */
bool tg_usage_parse(enum tg_api api, const json_t *usage, struct tg_usage *out);

/* The same as tg_usage_parse, from the usage object's JSON text (the hot path reads it
 * without a parse tree). */
bool tg_usage_parse_text(enum tg_api api, const char *text, size_t len, struct tg_usage *out);

/*
 * Reads usage from a whole response body (JSON object) of api. For Responses that is
 * body.usage; for chat, completions and embeddings body.usage; moderations report none
 * (returns false).
 */
bool tg_usage_from_response(enum tg_api api, const json_t *body, struct tg_usage *out);

#endif
