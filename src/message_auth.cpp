#include "message_auth.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <array>
#include <memory>
#include <new>

namespace syncbus::detail {
namespace {

using Digest = std::array<unsigned char, 32>;

constexpr std::string_view mac_field = R"(,"mac":")";

// HMAC-SHA256 of the concatenation of `parts`, each followed by a NUL byte
// but the last.
Digest hmac(const std::string& key, std::initializer_list<std::string_view> parts) {
  // EVP_MAC_fetch is cheap after the first call (OpenSSL caches the method).
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> method(EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                           &EVP_MAC_free);
  if (!method) throw error("syncbus: OpenSSL has no HMAC implementation");
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> context(EVP_MAC_CTX_new(method.get()),
                                                                    &EVP_MAC_CTX_free);
  if (!context) throw std::bad_alloc();
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  const auto* key_bytes = reinterpret_cast<const unsigned char*>(key.data());
  if (EVP_MAC_init(context.get(), key_bytes, key.size(), params) != 1) {
    throw error("syncbus: OpenSSL could not set up HMAC-SHA256");
  }
  const unsigned char separator = 0;
  bool first = true;
  for (const auto part : parts) {
    if (!first) EVP_MAC_update(context.get(), &separator, 1);
    first = false;
    EVP_MAC_update(context.get(), reinterpret_cast<const unsigned char*>(part.data()), part.size());
  }
  Digest out{};
  std::size_t length = 0;
  if (EVP_MAC_final(context.get(), out.data(), &length, out.size()) != 1 || length != out.size()) {
    throw error("syncbus: OpenSSL could not compute HMAC-SHA256");
  }
  return out;
}

std::string hex(const Digest& digest) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(digest.size() * 2, '0');
  for (std::size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = digits[digest[i] >> 4];
    out[2 * i + 1] = digits[digest[i] & 0xf];
  }
  return out;
}

// Compares in constant time: a forger learns nothing from how long it took.
bool same(const std::string& computed_hex, std::string_view given_hex) {
  return computed_hex.size() == given_hex.size() &&
         CRYPTO_memcmp(computed_hex.data(), given_hex.data(), given_hex.size()) == 0;
}

std::string envelope_mac(const std::string& key, std::string_view channel,
                         std::string_view signed_part) {
  return hex(hmac(key, {"syncbus-envelope", channel, signed_part}));
}

std::string body_mac(const std::string& key, const MessageAuth::SignedRow& row) {
  const auto& [channel, origin, sequence, stamp, body] = row;
  const auto number = std::to_string(sequence);
  if (!stamp) return hex(hmac(key, {"syncbus-row", channel, origin, number, body}));
  // A body is JSON text, which holds no NUL byte: the two forms cannot be
  // mistaken for one another, and the label tells them apart anyway.
  const auto born = std::to_string(stamp->born);
  const auto sent = std::to_string(stamp->sent_ms);
  return hex(hmac(key, {"syncbus-row-2", channel, origin, number, born, sent, body}));
}

}  // namespace

MessageAuth::MessageAuth(std::vector<std::string> keys) : keys_(std::move(keys)) {
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i].size() < min_key_bytes) {
      throw configuration_error(fmt::format(
          "syncbus: PostgresBusOptions::secrets[{}] is {} bytes; a secret must be at least {} "
          "bytes (use 32 random bytes, e.g. from `openssl rand -base64 32`)",
          i, keys_[i].size(), min_key_bytes));
    }
  }
}

std::string MessageAuth::sign_envelope(std::string_view channel, std::string_view envelope) const {
  if (!enabled()) return std::string(envelope);
  // The envelope without its closing brace is what the MAC covers.
  const auto signed_part = envelope.substr(0, envelope.size() - 1);
  std::string out;
  out.reserve(envelope.size() + envelope_overhead);
  out += signed_part;
  out += mac_field;
  out += envelope_mac(keys_.front(), channel, signed_part);
  out += "\"}";
  return out;
}

std::string_view MessageAuth::verify_envelope(std::string_view channel, std::string_view payload,
                                              std::string& unsigned_envelope) const {
  if (!enabled()) return payload;
  // `,"mac":"` 64 hex digits `"}` at the very end: exact bytes, no parsing.
  constexpr std::size_t tail = envelope_overhead + 1;
  const bool shaped = payload.size() > tail &&
                      payload.substr(payload.size() - tail, mac_field.size()) == mac_field &&
                      payload.substr(payload.size() - 2) == "\"}";
  if (!shaped) {
    throw protocol_error(
        "syncbus: dropped an unsigned notification on an authenticated channel (no \"mac\" at "
        "its end). Is a bus without PostgresBusOptions::secrets, or another program, notifying "
        "on this channel?");
  }
  const auto signed_part = payload.substr(0, payload.size() - tail);
  const auto given = payload.substr(payload.size() - 2 - 64, 64);
  for (const auto& key : keys_) {
    if (same(envelope_mac(key, channel, signed_part), given)) {
      unsigned_envelope.assign(signed_part);
      unsigned_envelope += '}';
      return unsigned_envelope;
    }
  }
  throw protocol_error(
      "syncbus: dropped a notification whose signature matches none of the secrets (forged, "
      "tampered with, or signed with a key this bus does not have: check that every bus shares "
      "PostgresBusOptions::secrets)");
}

std::string MessageAuth::row_mac(const SignedRow& row) const {
  return body_mac(keys_.front(), row);
}

bool MessageAuth::row_mac_valid(const SignedRow& row, std::string_view mac) const {
  for (const auto& key : keys_) {
    if (same(body_mac(key, row), mac)) return true;
  }
  return false;
}

}  // namespace syncbus::detail
