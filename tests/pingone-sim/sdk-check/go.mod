module github.com/idp-usage/pingone-usage-pipeline/tests/pingone-sim/sdk-check

go 1.24

require (
	github.com/patrickcping/pingone-go-sdk-v2 v0.14.0
	github.com/patrickcping/pingone-go-sdk-v2/management v0.60.0
)

require (
	github.com/patrickcping/pingone-go-sdk-v2/authorize v0.8.1 // indirect
	github.com/patrickcping/pingone-go-sdk-v2/credentials v0.11.1 // indirect
	github.com/patrickcping/pingone-go-sdk-v2/mfa v0.23.1 // indirect
	github.com/patrickcping/pingone-go-sdk-v2/risk v0.19.1 // indirect
	github.com/patrickcping/pingone-go-sdk-v2/verify v0.9.1 // indirect
	golang.org/x/oauth2 v0.30.0 // indirect
)
