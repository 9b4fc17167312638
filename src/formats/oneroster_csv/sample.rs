//! `elevflyt generate` for oneroster-csv: one snapshot as a OneRoster 1.2 CSV bulk zip
//! (`oneroster-2026-09-01.zip`: manifest, orgs, academicSessions, classes, users with
//! `roles.csv`, enrollments), the same data the JSON sample has.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::generate::{io, Population};

pub fn write(
    out: &Path,
    date: chrono::NaiveDate,
    population: &Population<'_>,
) -> Result<Vec<String>> {
    let (year_end, schools, pupils) = (population.year_end, population.schools, population.pupils);
    let d = date.format("%Y-%m-%d").to_string();
    let modified = format!(
        "{}T00:00:00Z",
        (date - chrono::Duration::days(1)).format("%Y-%m-%d")
    );
    let path = out.join(format!("oneroster-{d}.zip"));
    let file = std::fs::File::create(&path).map_err(io(&path))?;
    let mut z = zip::ZipWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let zerr =
        |e: zip::result::ZipError| Error::Usage(format!("cannot write {}: {e}", path.display()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let member = |z: &mut zip::ZipWriter<_>,
                  name: &str,
                  body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>|
     -> Result<()> {
        z.start_file(name, opts).map_err(zerr)?;
        body(z).map_err(io(&path))
    };
    member(&mut z, "manifest.csv", &mut |w| {
        write!(w, "propertyName,value\nmanifest.version,1.0\noneroster.version,1.2\nfile.academicSessions,bulk\nfile.categories,absent\nfile.classes,bulk\nfile.classResources,absent\nfile.courses,absent\nfile.courseResources,absent\nfile.demographics,absent\nfile.enrollments,bulk\nfile.lineItems,absent\nfile.orgs,bulk\nfile.resources,absent\nfile.results,absent\nfile.roles,bulk\nfile.userProfiles,absent\nfile.users,bulk\nsource.systemName,elevflyt generate\nsource.systemCode,elevflyt\n")
    })?;
    member(&mut z, "orgs.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId,metadata.skolenummer,metadata.kommunenummer")?;
        for s in schools {
            writeln!(
                w,
                "org-{sn},active,{modified},{},school,{},,{sn},{}",
                s.name,
                s.orgnr,
                s.kommune,
                sn = s.skolenummer
            )?;
        }
        Ok(())
    })?;
    member(&mut z, "academicSessions.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear")?;
        writeln!(w, "as-{year_end},active,{modified},{}/{year_end},schoolYear,{}-08-01,{year_end}-07-31,,{year_end}", year_end - 1, year_end - 1)
    })?;
    member(&mut z, "classes.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods")?;
        for s in schools {
            for g in 1..=10 {
                for c in ['A', 'B'] {
                    writeln!(w, "cls-{sn}-{g}{c},active,{modified},{g}{c},{g:02},,{g}{c},homeroom,,org-{sn},as-{year_end},,,", sn = s.skolenummer)?;
                }
            }
        }
        Ok(())
    })?;
    member(&mut z, "users.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,resourceSourcedIds,preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns")?;
        for u in pupils {
            let s = &schools[u.school];
            let lsid = u.sid.to_lowercase();
            writeln!(w, "{},active,{modified},true,{lsid},{{Feide:{lsid}@k{}.kommune.no}},{},{},,{},,,,,,,,,,,,org-{},", u.sid, s.kommune, u.given, u.family, u.fnr, s.skolenummer)?;
        }
        Ok(())
    })?;
    member(&mut z, "roles.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId")?;
        for u in pupils {
            writeln!(
                w,
                "role-{sid},active,{modified},{sid},primary,student,,,org-{},",
                schools[u.school].skolenummer,
                sid = u.sid
            )?;
        }
        Ok(())
    })?;
    member(&mut z, "enrollments.csv", &mut |w| {
        writeln!(w, "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate")?;
        for u in pupils {
            let sn = &schools[u.school].skolenummer;
            writeln!(
                w,
                "enr-{sid}-{sn},active,{modified},cls-{sn}-{}{},org-{sn},{sid},student,,,",
                u.grade,
                u.class,
                sid = u.sid
            )?;
        }
        Ok(())
    })?;
    let mut inner = z.finish().map_err(zerr)?;
    inner.flush().map_err(io(&path))?;
    Ok(vec![path.display().to_string()])
}
