/* attest/amd_certs.h — private: embedded AMD ARK/ASK/ASVK DER (amd_certs.c). */
#ifndef SHIELD_ATTEST_AMD_CERTS_H
#define SHIELD_ATTEST_AMD_CERTS_H
extern const unsigned char sh_attest__amd_milan_ark[1639];
extern const unsigned int sh_attest__amd_milan_ark_len;
extern const unsigned char sh_attest__amd_milan_ask[1677];
extern const unsigned int sh_attest__amd_milan_ask_len;
extern const unsigned char sh_attest__amd_milan_asvk[1683];
extern const unsigned int sh_attest__amd_milan_asvk_len;
extern const unsigned char sh_attest__amd_genoa_ark[1639];
extern const unsigned int sh_attest__amd_genoa_ark_len;
extern const unsigned char sh_attest__amd_genoa_ask[1677];
extern const unsigned int sh_attest__amd_genoa_ask_len;
extern const unsigned char sh_attest__amd_genoa_asvk[1683];
extern const unsigned int sh_attest__amd_genoa_asvk_len;
extern const unsigned char sh_attest__amd_turin_ark[1639];
extern const unsigned int sh_attest__amd_turin_ark_len;
extern const unsigned char sh_attest__amd_turin_ask[1677];
extern const unsigned int sh_attest__amd_turin_ask_len;
#endif
