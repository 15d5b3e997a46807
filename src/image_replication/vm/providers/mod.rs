//! One module per cloud image service, each an [`super::ImageService`] with its error table:
//! the clouds' own copy APIs ([`huawei`] IMS jobs, [`alibaba`] ECS, [`aws`] EC2, [`tencent`]
//! CVM, [`google`] Compute Engine, [`azure`] Compute Gallery) and [`openstack`] (Keystone v3 + Glance v2, where the operator moves the bytes).

pub mod alibaba;
pub mod aws;
pub mod azure;
pub mod google;
pub mod huawei;
pub mod openstack;
pub mod tencent;

use super::facts::Cloud;
use super::facts::Sharing;
use crate::api::v1alpha1::ProviderKind;

/// The clouds of this build: one line each (its module's `CLOUD`, every fact it states).
pub const CLOUDS: &[&Cloud] = &[
    &huawei::CLOUD,
    &alibaba::CLOUD,
    &aws::CLOUD,
    &tencent::CLOUD,
    &openstack::CLOUD,
    &google::CLOUD,
    &azure::CLOUD,
];

/// The facts of a cloud kind; `None` for oci.
pub fn cloud(kind: ProviderKind) -> Option<&'static Cloud> {
    CLOUDS.iter().copied().find(|c| c.kind == kind)
}

/// What a cloud states about sharing an image; `None`: it cannot (oci).
pub fn sharing(kind: ProviderKind) -> Option<&'static Sharing> {
    cloud(kind).map(|c| c.sharing)
}

/// The egress policy's default cloud hosts: every cloud's public endpoint patterns.
pub fn default_cloud_hosts() -> String {
    CLOUDS
        .iter()
        .flat_map(|c| c.hosts.iter().copied())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every VM kind of the API has exactly one registry line, and its facts say its kind (a
    /// cloud added to the enum but not registered would be "not implemented" at run time).
    #[test]
    fn every_cloud_kind_has_one_registry_line() {
        for kind in ProviderKind::ALL {
            let lines = CLOUDS.iter().filter(|c| c.kind == kind).count();
            assert_eq!(lines, usize::from(kind != ProviderKind::Oci), "{kind:?}");
        }
        for c in CLOUDS {
            assert_eq!(
                (c.service)().kind(),
                c.kind,
                "{:?}: its service is another cloud's",
                c.kind
            );
        }
    }
}
