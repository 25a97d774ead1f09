/*
 * curl_opts.h - the libcurl options every outgoing request of the worker
 * role shares (webhook POSTs, feed GETs): URL, headers, one timeout for
 * connect and for the whole exchange, no signals (threads), no redirects,
 * HTTP(S) only.
 */
#ifndef CHRONICLE_WORKER_CURL_OPTS_H
#define CHRONICLE_WORKER_CURL_OPTS_H

#include <curl/curl.h>

void worker_curl_common(CURL *c, const char *url, struct curl_slist *headers, long timeout_ms);

#endif
